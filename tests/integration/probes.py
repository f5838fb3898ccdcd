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


def boot_comfy_with_pack(comfy_dir, pack_root, scratch, extra_args=()):
    """In a probe script (ComfyUI's Python): ComfyUI's modules importable with its CPU arguments (and
    ``extra_args``, parsed by core's own argument parser: e.g. ``--fp16-unet``), input/ and
    output/ in ``scratch`` (the pack copies its example inputs there), and the pack imported as ComfyUI imports
    it, as the package ``AnimeVideo``. Returns the pack module."""
    import importlib.util
    import sys
    import tempfile

    sys.argv = [sys.argv[0], "--cpu", *extra_args]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    folder_paths.set_input_directory(tempfile.mkdtemp(dir=scratch))
    folder_paths.set_output_directory(tempfile.mkdtemp(dir=scratch))
    spec = importlib.util.spec_from_file_location("AnimeVideo", os.path.join(pack_root, "__init__.py"),
                                                  submodule_search_locations=[pack_root])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["AnimeVideo"] = pack
    spec.loader.exec_module(pack)
    return pack
