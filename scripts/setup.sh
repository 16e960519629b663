#!/usr/bin/env bash
# Set-up shared by the README's two commands and CI: a virtual environment in .venv with the
# project and its test extras, pinned by constraints.txt (the versions CI runs), and Debian's
# chromium for the HTML report and Prefect UI tests (Playwright drives /usr/bin/chromium; no
# browser download).
# Idempotent: pip runs again only when pyproject.toml or constraints.txt changed since the last
# install; apt-get runs only when chromium or PostgreSQL is missing.
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
# Debian packages the tests need: installed with apt-get when missing and we are root (CI),
# else a warning. Usage: apt_need PACKAGE WHAT_NEEDS_IT
apt_need() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $1 (Debian package) for $2" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
    else
        echo "warning: $1 is missing; $2 need(s) it (apt-get install $1)" >&2
    fi
}
# Headless Chromium renders the HTML quality report in the tests: Debian's package (no browser
# download; playwright drives /usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
    apt_need chromium "the HTML report and Prefect UI tests"
fi
# PostgreSQL backs the Prefect server of infra/compose.yaml; tests/test_infra_stack.py runs Debian's
# postgresql (initdb + pg_ctl, a throw-away data directory) in its place.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    apt_need postgresql "the infra stack test"
fi
