"""Core's *Load CLIP* (type stable_diffusion) + *CLIP Text Encode* on a ModelScopeT2V / I2VGen-XL text tower give
the embedding our samplers compute from the prompt widget, checked inside ComfyUI's Python (t2v_clip_probe.py) on
full-size random towers in the released file layout. So the samplers' optional positive/negative CONDITIONING
inputs take core's text encoding of the same model as a drop-in for the prompt."""
from __future__ import annotations

import pytest

from probes import run_probe

# one float32 forward of a 24-layer tower, core's attention and norms vs transformers': ~3e-6 at a scale of ~4;
# reading a neighbouring layer or skipping the final LayerNorm moves it by O(1)
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def probe(comfy, tmp_path_factory):
    return run_probe(comfy, "t2v_clip_probe.py", tmp_path_factory.mktemp("t2v_clip"))


@pytest.mark.parametrize("model", ["modelscope", "i2vgenxl"])
def test_core_clip_text_encode_matches_our_text_encoding(probe, model):
    for row in probe[model]:
        assert row["core_class"] == "SD2ClipModel", row  # core recognised the OpenCLIP-H tower
        assert row["shape"] == row["ours_shape"] == [1, 77, 1024], row
        assert row["max_abs"] <= RELATIVE_TOLERANCE * row["scale"], row
