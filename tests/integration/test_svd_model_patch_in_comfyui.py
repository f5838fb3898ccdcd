"""SVD Guide Model Patch on core ComfyUI's own SVD model, SVD_img2vid_Conditioning node and samplers, checked inside
ComfyUI's Python (svd_patch_probe.py; see there why the tiny checkpoint is built into core's model by hand)."""
from __future__ import annotations


import pytest

from probes import run_probe

RUNS = ("euler_karras", "dpmpp_2m_normal", "heun_exponential")
# Held latents: the hook sets the denoised estimate to the guide exactly; a sampler's last step then computes
# x + (x - D)/s * (0 - s), which returns D up to float32 rounding of x (|x| ~ sigma * noise): about 1e-9 here.
# Samplers that set x = D at sigma 0 (dpmpp_2m) return the guide bit for bit.
HELD_RELATIVE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def probe(comfy, tmp_path_factory):
    return run_probe(comfy, "svd_patch_probe.py", tmp_path_factory.mktemp("svd_patch"))


@pytest.mark.parametrize("run", RUNS)
def test_outside_the_dilated_mask_the_latents_are_the_guides(probe, run):
    r = probe["runs"][run]
    assert 0.3 < probe["held_share"] < 0.95  # keyframe frames + the static region outside the dilated mask
    assert r["held_max_abs"] <= HELD_RELATIVE_TOLERANCE * r["guide_scale"], r
    assert r["free_max_abs"] > 0.01, r  # the moving region is generated, not copied
    assert r["unguided_held_max_abs"] > 0.01, r  # without the patch the same run does not land on the guide


def test_the_hook_runs_at_every_model_evaluation(probe):
    assert probe["runs"]["euler_karras"]["hook_calls"] == 4
    assert probe["runs"]["dpmpp_2m_normal"]["hook_calls"] == 4
    assert probe["runs"]["heun_exponential"]["hook_calls"] == 7  # 2 per step, 1 on the last
    assert probe["runs"]["dpmpp_2m_normal"]["held_max_abs"] == 0.0


def test_the_patch_clones_the_model(probe):
    assert probe["original_untouched"]
    assert "keyframe 2: frame_index -1 -> frame 5" in probe["info"] and "dilated by 1 latent px" in probe["info"]
