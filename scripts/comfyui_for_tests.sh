#!/usr/bin/env bash
# A real ComfyUI for tests/integration, set up once per machine and reused while it matches.
#
#   eval "$(bash scripts/comfyui_for_tests.sh)"
#
# Prints `export COMFYUI_DIR=… COMFYUI_PYTHON=…` on stdout (everything else goes to stderr), or prints
# nothing when no ComfyUI can be had, so the integration tests skip (saying how to run them).
#
# Where the ComfyUI comes from, first match wins:
#   1. COMFYUI_DIR and COMFYUI_PYTHON already set: used as they are (your own ComfyUI checkout).
#   2. ANIMEVIDEO_SHARED (default: ../shared beside this checkout) holding
#      vendor/comfyui-0.8.0-618b803.tar.gz and tools/comfyui-harness.sh: the harness sets that snapshot up
#      in ANIMEVIDEO_HARNESS_DIR (default: ~/.cache/animevideo/comfyui-<key>), where <key> hashes the
#      snapshot, the harness script and the Python, so a later run on the same machine reuses it and a
#      changed snapshot gets a fresh one. The pack's requirements.txt is installed into its venv each run
#      (a no-op when already satisfied).
# Any failure of setup or install is fatal (non-zero exit): a broken harness must not look like a skip.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "comfyui_for_tests: $*" >&2; }

if [ -n "${COMFYUI_DIR:-}" ] && [ -n "${COMFYUI_PYTHON:-}" ]; then
  say "using COMFYUI_DIR=$COMFYUI_DIR (COMFYUI_PYTHON=$COMFYUI_PYTHON)"
  echo "export COMFYUI_DIR='$COMFYUI_DIR' COMFYUI_PYTHON='$COMFYUI_PYTHON'"
  exit 0
fi

SHARED=${ANIMEVIDEO_SHARED:-$ROOT/../shared}
SNAPSHOT="$SHARED/vendor/comfyui-0.8.0-618b803.tar.gz"
HARNESS_SCRIPT="$SHARED/tools/comfyui-harness.sh"
if [ ! -f "$SNAPSHOT" ] || [ ! -f "$HARNESS_SCRIPT" ]; then
  say "no ComfyUI snapshot at $SNAPSHOT: the real-ComfyUI tests (tests/integration) will skip."
  say "to run them, set COMFYUI_DIR (a ComfyUI source tree) and COMFYUI_PYTHON (its Python, with this"
  say "pack's requirements installed) and run this command again; see README, 'Tests'."
  exit 0
fi

# the harness makes its venv with the python3 on PATH: its version is part of the key
PY=python3
key=$({ sha256sum "$SNAPSHOT" "$HARNESS_SCRIPT" | cut -d' ' -f1; "$PY" -c 'import sys; print(sys.version)'; } \
      | sha256sum | cut -c1-12)
HARNESS=${ANIMEVIDEO_HARNESS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/animevideo/comfyui-$key}
STAMP="$HARNESS/.animevideo-ready"
mkdir -p "$(dirname "$HARNESS")"

# One setup at a time per harness folder (two test runs on one machine wait for each other).
exec 9>"$HARNESS.lock"
flock 9
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] && [ -x "$HARNESS/venv/bin/python" ] \
   && [ -f "$HARNESS/ComfyUI/main.py" ]; then
  say "reusing the ComfyUI harness in $HARNESS"
else
  say "setting up ComfyUI 0.8.0 in $HARNESS (once per machine; about 2 minutes)"
  rm -rf "$HARNESS"
  # the harness prints pip's noise about unreachable index folders; keep its errors, drop that noise
  if ! bash "$HARNESS_SCRIPT" setup "$SNAPSHOT" "$HARNESS" > "$HARNESS.setup.log" 2>&1; then
    grep -v "^WARNING: Location" "$HARNESS.setup.log" | tail -40 >&2
    say "ComfyUI setup FAILED (full log: $HARNESS.setup.log)"
    exit 1
  fi
  echo "$key" > "$STAMP"
fi

log="$HARNESS/pack-requirements.log"
if ! "$HARNESS/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" \
     > "$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" | tail -40 >&2
  say "installing the pack's requirements.txt into $HARNESS/venv FAILED (log: $log)"
  exit 1
fi
echo "export COMFYUI_DIR='$HARNESS/ComfyUI' COMFYUI_PYTHON='$HARNESS/venv/bin/python'"
