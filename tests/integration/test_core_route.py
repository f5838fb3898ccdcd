"""AniSora on core ComfyUI's own Wan MODEL, checked inside ComfyUI's Python (core_route_probe.py): core's
``WAN21.concat_cond`` sees our own path's packing bit for bit, and core's sampler on the same noise, condition
and sigmas lands where our own sampler does."""
from __future__ import annotations

import os

import pytest

from probes import run_probe

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ("first", "first_last", "first_middle_last", "last_only", "off_grid_middle", "anymask_spatial",
         "anymask_temporal")
# Core's WanModel and diffusers' WanTransformer3DModel agree to ~1e-5 of the output's scale on one float32
# forward of the tiny model (different op order in attention, norms, RoPE); euler on the same sigmas adds
# steps of that size. 2e-4 of the latents' scale leaves room for 4 steps x 2 passes with cfg, far below a real
# difference (a wrong mask, latent normalisation or sigma moves them by O(scale)).
EULER_RELATIVE_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def probe(comfy, tmp_path_factory):
    return run_probe(comfy, "core_route_probe.py", tmp_path_factory.mktemp("core_route"))


@pytest.mark.parametrize("case", CASES)
def test_core_concat_cond_sees_our_packing_bit_for_bit(probe, case):
    y = probe["y"][case]
    assert y["shape"] == [2, 20, 5, 8, 12]  # batch 2: core repeats the condition per clip
    assert y["mask_equal"], y
    assert y["equal"] and y["max_abs"] == 0.0, y
    assert y["equal_negative"], y


def test_core_vae_matches_our_vae(probe):
    """Core's WanVAE and diffusers' AutoencoderKLWan read the same tiny file to the same guide latent."""
    assert probe["vae"]["max_abs"] <= 1e-5 * max(1.0, probe["vae"]["scale"]), probe["vae"]


@pytest.mark.parametrize("key", ["steps4_cfg1", "steps4_cfg3"])
def test_core_sampler_on_our_sigmas_lands_on_our_latents(probe, key):
    s = probe["sampling"][key]
    assert s["moved"] > 1.0  # the sampler really moved away from the noise
    assert s["euler_same_sigmas_max_abs"] <= EULER_RELATIVE_TOLERANCE * s["latent_scale"], s
