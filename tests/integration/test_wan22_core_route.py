"""AniSora V3.2 (Wan2.2-I2V-A14B) on core ComfyUI's own models, checked inside ComfyUI's Python
(wan22_core_probe.py): core loads the tiny high/low-noise files as it loads the released ones, its
``concat_cond`` sees our packing bit for bit, and core's two KSamplerAdvanced passes land where our own
two-expert sampler does."""
from __future__ import annotations

import pytest

from probes import run_probe

# As test_core_route.py: core's WanModel and diffusers' WanTransformer3DModel differ by ~1e-5 of the output's
# scale per float32 forward; 4 euler steps (x2 passes with cfg) stay far below a real difference (a wrong expert,
# split, mask or sigma moves the latents by O(scale)).
EULER_RELATIVE_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def probe(comfy, tmp_path_factory):
    return run_probe(comfy, "wan22_core_probe.py", tmp_path_factory.mktemp("wan22_core"))


def test_core_reads_the_experts_as_it_reads_wan22_i2v(probe):
    for expert in ("high", "low"):
        assert probe["detected"][expert] == {"model_config": "WAN21_T2V", "image_to_video": False, "in_dim": 36}


@pytest.mark.parametrize("case", ["first", "first_middle_last", "anymask_spatial"])
def test_core_concat_cond_sees_our_packing_bit_for_bit(probe, case):
    y = probe["y"][case]
    assert y["shape"] == [1, 20, 5, 8, 12] and y["equal"] and y["max_abs"] == 0.0, y


@pytest.mark.parametrize("key", ["steps4_cfg1", "steps4_cfg3"])
def test_core_two_passes_land_on_our_expert_switch(probe, key):
    s = probe["sampling"][key]
    assert s["split"] == 2 and s["moved"] > 1.0, s  # 1000/909 high-noise, 714/5 low-noise
    assert s["max_abs"] <= EULER_RELATIVE_TOLERANCE * s["latent_scale"], s
