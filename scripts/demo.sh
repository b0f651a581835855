#!/usr/bin/env bash
# The README's main-job command:
#   bash scripts/demo.sh [DATA_DIR] [--repo demo_repo] [--mode reuse|rebuild] [--instrument NAME] [-j N]
# Creates .venv beside this script's repository (or reuses it), installs ccdflow into it, and runs
# the whole calibration flow (butler create -> register-instrument -> ingest-raws -> cpBias ->
# certify -> cpFlat -> certify -> cpPtc -> certify -> isr) on DATA_DIR (default ../shared/data
# next to the repository) into the SQLite repository demo_repo/ (in the current directory).
# Re-running reuses what is done (--mode reuse, the default); --mode rebuild starts again.
# Environment: PYTHON (interpreter for the venv, >= 3.11; default python3), CCDFLOW_VENV (venv path).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
VENV=${CCDFLOW_VENV:-$HERE/.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python >= 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: ccdflow needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1)); set PYTHON=python3.11" >&2
    exit 1
  fi
  echo "creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# (re)install when the venv has no ccdflow yet or pyproject.toml changed since the last install
STAMP="$VENV/.ccdflow-installed"
if [ ! -x "$VENV/bin/ccdflow-demo" ] || [ ! -f "$STAMP" ] || [ "$HERE/pyproject.toml" -nt "$STAMP" ]; then
  echo "installing ccdflow into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q -e "$HERE"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# the data directory: the first argument unless it is an option, else ../shared/data beside the checkout
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- "$HERE/../shared/data" "$@"
fi
exec "$VENV/bin/ccdflow-demo" "$@"
