#!/usr/bin/env bash
# Set up, then lint (ruff), type-check (mypy) and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# The house habits first (ARCHITECTURE.md): lint with import sorting, then the type check.
.venv/bin/python -m ruff check --quiet .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
