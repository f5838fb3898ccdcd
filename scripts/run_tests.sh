#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Makes .venv with the pinned torch the tests use, installs the pack's and the tests' requirements,
# and runs the whole suite on the CPU. The real-ComfyUI tests in tests/integration run only when
# COMFYUI_DIR and COMFYUI_PYTHON are set (see README) and skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" \
  -r requirements.txt -r requirements-test.txt 2>&1 | grep -v "^WARNING: Location" || true
exec .venv/bin/python -m pytest -q "$@"
