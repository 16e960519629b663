#!/usr/bin/env bash
# Set-up shared by the README's two commands and CI: a virtual environment in .venv with the
# project and its test extras, pinned by constraints.txt (the versions CI runs). Idempotent: pip
# runs again only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "sr-pipeline needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.sr-pipeline-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (first time: a few minutes, torch is most of it)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
    .venv/bin/python -m pip check >&2
    echo "$want" > "$stamp"
fi
