#!/usr/bin/env bash
# Install this pack into an existing ComfyUI and start it:
#   bash scripts/install_into_comfyui.sh /path/to/ComfyUI [extra ComfyUI arguments, e.g. --cpu]
# Links this checkout into ComfyUI/custom_nodes/anime-video-nodes, installs requirements.txt with
# ComfyUI's Python (COMFYUI_PYTHON, else ComfyUI's venv/.venv, else python3), then runs main.py.
# It never replaces an existing custom_nodes entry that is not this link.
set -euo pipefail
COMFY=${1:?usage: install_into_comfyui.sh /path/to/ComfyUI [ComfyUI args]}
shift
PACK=$(cd "$(dirname "$0")/.." && pwd)
COMFY=$(cd "$COMFY" && pwd)
[ -f "$COMFY/main.py" ] || { echo "$COMFY has no main.py: not a ComfyUI folder" >&2; exit 2; }
PY=${COMFYUI_PYTHON:-}
for cand in "$COMFY/venv/bin/python" "$COMFY/.venv/bin/python" "$(command -v python3)"; do
  [ -n "$PY" ] && break
  [ -x "$cand" ] && PY=$cand
done
DEST="$COMFY/custom_nodes/anime-video-nodes"
if [ -L "$DEST" ] || [ -e "$DEST" ]; then
  if [ "$(cd "$DEST" && pwd -P)" != "$(cd "$PACK" && pwd -P)" ]; then
    echo "$DEST exists and is not this checkout; leaving it alone" >&2; exit 2
  fi
else
  ln -s "$PACK" "$DEST"
fi
"$PY" -m pip install -r "$PACK/requirements.txt"
echo "Installed into $DEST. Starting ComfyUI…"
cd "$COMFY"
exec "$PY" main.py "$@"
