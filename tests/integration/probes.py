"""Scripts run in ComfyUI's own Python (core's model classes, VAE and samplers) that print their findings as JSON
on the last line: core_route_probe.py, svd_patch_probe.py."""
from __future__ import annotations

import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_probe(comfy, script, scratch) -> dict:
    r = subprocess.run([comfy.comfy_python, os.path.join(HERE, script), comfy.comfy_dir, ROOT, comfy.models_dir,
                        str(scratch)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
