#!/usr/bin/env bash
# The README's main-job command:
#   bash scripts/demo.sh [DATA_DIR] [--mode reuse|rebuild] [--repo demo_repo]
# Creates .venv (or reuses it), installs ccdflow, and runs the whole calibration flow
# (ingest -> cpBias -> cpFlat -> cpPtc -> isr, certifying each calibration) on DATA_DIR
# (default ../shared/data) into the SQLite repository demo_repo/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CCDFLOW_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e .
export PATH="$PWD/$VENV/bin:$PATH"
exec "$VENV/bin/ccdflow-demo" "$@"
