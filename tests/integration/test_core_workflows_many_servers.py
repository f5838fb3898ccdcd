"""The core-route workflows beyond the generic runs of test_comfyui_server.py (needs COMFYUI_DIR/COMFYUI_PYTHON):

* fp8: core's Load Diffusion Model with weight_dtype fp8_e4m3fn (the shipped default of the AniSora core
  workflows) really holds the tiny Wan in float8, our conditioning's ``y`` is the same bits for either weight
  dtype, and core's sampler gives a finite clip that differs from the float32 one by the quantisation only;
* many clips on several servers: scripts/queue_many.py queues a shipped workflow through the real /prompt API
  round-robin with one seed per clip (one server here, named twice: the script cannot tell, and a second server
  costs the test another ComfyUI process), and each clip is saved.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import sys

from probes import run_probe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SMALL = {"width": 64, "height": 64, "length": 5, "steps": 2}
# fp8 e4m3 keeps 3 mantissa bits (relative rounding up to 1/16 per weight): two uni_pc steps of the tiny model
# land 5.1% of the latents' scale away from the float32 run (measured: 6.55 of 129.0); a wrong dtype path gives NaN
# or another clip. 3x the measured change.
FP8_MAX_RELATIVE_CHANGE = 0.15


def test_fp8_weights_are_float8_and_sample_the_same_clip_within_quantisation(comfy, tmp_path):
    r = run_probe(comfy, "core_fp8_probe.py", tmp_path)
    assert r["weight_dtypes"] == {"default": "torch.float32", "fp8_e4m3fn": "torch.float8_e4m3fn"}, r
    assert r["y_equal"] and r["finite"] and r["moved"] > 1.0, r
    assert 0.0 < r["fp8_vs_default_max_abs"] <= FP8_MAX_RELATIVE_CHANGE * r["scale"], r


def fake_encoders_swap():
    spec = importlib.util.spec_from_file_location("animevideo_fake_encoders_swap_many",
                                                  os.path.join(HERE, "fake_encoders", "swap.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def queue_many_module():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import queue_many
    finally:
        sys.path.pop(0)
    return queue_many


def test_queue_many_renders_one_clip_per_seed_through_the_api(comfy):
    qm = queue_many_module()
    workflow = os.path.join(ROOT, "workflows", "api", "anisora_core_keyframe_inbetween.json")
    # the test-only encoder swap the server tests apply to every queued prompt (core's UMT5 / ViT-H are too big)
    prompt = fake_encoders_swap().swap_core_encoders(qm.with_values(qm.load_api_workflow(workflow), SMALL))
    log = io.StringIO()
    clips = qm.queue_many(prompt, [comfy.url, comfy.url + "/"], 2, 9100, wait=True, timeout=600, out=log)
    assert [c["seed"] for c in clips] == [9100, 9101], log.getvalue()
    digests = []
    for c in clips:
        assert len(c["files"]) == 1 and c["files"][0].endswith(".mp4"), c
        with open(os.path.join(comfy.output_dir, c["files"][0]), "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    assert digests[0] != digests[1]  # two seeds, two clips
