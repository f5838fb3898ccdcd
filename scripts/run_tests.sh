#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Makes .venv with the pinned torch the tests use, installs the pack's and the tests' requirements,
# provides a real ComfyUI for tests/integration (scripts/comfyui_for_tests.sh: your COMFYUI_DIR, or the
# ComfyUI 0.8.0 snapshot in ../shared set up once per machine) and runs the whole suite on the CPU.
# Without either, the unit tests run and the real-ComfyUI tests skip, saying how to run them.
# A failed install stops the run with pip's error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# pip's notes about unreachable local index folders are noise; its errors are not, and its exit status counts
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" \
  -r requirements.txt -r requirements-test.txt 2>&1 | { grep -v "^WARNING: Location" || true; }

exports=$(bash scripts/comfyui_for_tests.sh)
eval "$exports"
# -rs: the summary says why anything skipped (the integration tests without a ComfyUI, say)
exec .venv/bin/python -m pytest -q -rs "$@"
