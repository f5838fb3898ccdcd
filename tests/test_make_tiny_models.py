"""scripts/make_tiny_models.py writes real formats under real names and never overwrites real models."""
import os
import subprocess
import sys

import torch

from pack_paths import ROOT

from animevideo.pipelines.svd import loader

SCRIPT = os.path.join(ROOT, "scripts", "make_tiny_models.py")


def _run(target):
    return subprocess.run([sys.executable, SCRIPT, str(target)], capture_output=True, text=True, timeout=300)


def test_writes_loadable_models_under_the_names_the_workflows_use(tiny_models_dir):
    sgm = os.path.join(tiny_models_dir, "checkpoints", "svd_xt.safetensors")
    folder = os.path.join(tiny_models_dir, "diffusers", "stable-video-diffusion-img2vid-xt")
    assert loader.load_svd(sgm, torch.float32).layout == "sgm"
    assert loader.load_svd(folder, torch.float32).layout == "diffusers"


def test_refuses_a_folder_it_did_not_make(tmp_path):
    real = tmp_path / "checkpoints" / "svd_xt.safetensors"
    real.parent.mkdir()
    real.write_bytes(b"the user's real 9 GB model")
    r = _run(tmp_path)
    assert r.returncode == 2 and "refusing" in r.stderr
    assert real.read_bytes() == b"the user's real 9 GB model"


def test_refuses_to_overwrite_a_file_it_did_not_write_even_with_its_marker(tmp_path):
    assert _run(tmp_path).returncode == 0
    extra = tmp_path / "checkpoints" / "svd_xt.safetensors"
    os.remove(extra)
    extra.write_bytes(b"user file")
    marker = tmp_path / ".animevideo-tiny-models.json"
    marker.write_text('{"written": []}')
    assert _run(tmp_path).returncode == 2 and extra.read_bytes() == b"user file"


def test_rerun_on_its_own_folder_is_allowed(tmp_path):
    assert _run(tmp_path).returncode == 0
    assert _run(tmp_path).returncode == 0
