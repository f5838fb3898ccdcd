"""Parity with the ORIGINAL StreamingT2V modules (Picsart-AI-Research/StreamingT2V, StreamingModelscope): the fixture
in tests/data/reference_fixtures/streaming_t2v holds tiny random weights built in the original classes (as a
seeded recipe) and the original's float64 outputs; the pack's modules load those weights under the released key
names and must give the same numbers. The original is not needed here (see SOURCE.json for how it was made)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from animevideo.pipelines.streaming_t2v import keys
from animevideo.pipelines.streaming_t2v.model import (CAMEncoder, ImgEmbContextResampler, base_unet_forward,
                                                       build_base_unet)
from animevideo.pipelines.checkpoint_io import materialize as _materialize

import reference_weights as rw

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_fixtures", "streaming_t2v")
TOL = 1e-9


@pytest.fixture(scope="module")
def source():
    with open(os.path.join(FIXTURE, "SOURCE.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def cases():
    return load_file(os.path.join(FIXTURE, "cases.safetensors"))


@pytest.fixture(scope="module")
def modules():
    recipe = rw.load_recipe(os.path.join(FIXTURE, "streaming_t2v_tiny_fp16.recipe.json"))
    sd = rw.state_dict_from_recipe(recipe)
    assert rw.tensors_sha256(sd) == recipe["sha256"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    unet_cfg = keys.detect_unet_config(keys.sub_shapes(shapes, keys.BASE_PREFIX))
    with torch.device("meta"):
        base = build_base_unet(unet_cfg)
        cam = CAMEncoder(unet_cfg, **keys.detect_cam_config(keys.sub_shapes(shapes, keys.CAM_PREFIX)))
        res = ImgEmbContextResampler(**keys.detect_resampler_config(keys.sub_shapes(shapes, keys.RESAMPLER_PREFIX)))
    take = lambda p: {k[len(p):]: v.double() for k, v in sd.items() if k.startswith(p)}  # noqa: E731
    return (_materialize(base, take(keys.BASE_PREFIX), "base"), _materialize(cam, take(keys.CAM_PREFIX), "CAM"),
            _materialize(res, take(keys.RESAMPLER_PREFIX), "resampler"))


@pytest.fixture(scope="module")
def inputs(source, cases):
    """The generator's inputs, drawn again from its seed in its order (make_streaming_t2v.py::parity_inputs)."""
    hw = source["tiny_unet"]["sample_size"]
    gen = torch.Generator().manual_seed(source["input_seed"])
    x = {
        "latents": torch.randn(1, 4, 16, hw, hw, generator=gen, dtype=torch.float64),
        "context": torch.randn(1, 93, 1024, generator=gen, dtype=torch.float64),
        "cam_frames": torch.rand(8, 3, 8 * hw, 8 * hw, generator=gen, dtype=torch.float64) * 2 - 1,
        "image_embeds": torch.randn(1, 8, 1024, generator=gen, dtype=torch.float64),
    }
    for name, value in x.items():
        assert torch.equal(value.reshape(-1)[:16], cases[name + "_head"]), name
    return x


def test_cam_features_match_the_original(modules, cases, inputs, source):
    _, cam, _ = modules
    with torch.no_grad():
        down, mid = cam(inputs["latents"], source["timestep"], inputs["context"], inputs["cam_frames"])
    assert torch.allclose(mid, cases["cam_mid"], rtol=0, atol=TOL), (mid - cases["cam_mid"]).abs().max()
    assert torch.allclose(down[1], cases["cam_down_1"], rtol=0, atol=TOL)


def test_noise_prediction_with_cam_and_apm_matches_the_original(modules, cases, inputs, source):
    base, cam, _ = modules
    t = source["timestep"]
    with torch.no_grad():
        down, mid = cam(inputs["latents"], t, inputs["context"], inputs["cam_frames"])
        got = base_unet_forward(base, inputs["latents"], t, inputs["context"], down, mid)
        plain = base_unet_forward(base, inputs["latents"], t, inputs["context"])
    want = cases["noise_pred"]
    assert torch.allclose(got, want, rtol=0, atol=TOL), (got - want).abs().max()
    assert torch.allclose(plain, cases["noise_pred_without_cam"], rtol=0, atol=TOL)
    assert (want - cases["noise_pred_without_cam"]).abs().max() > 1e-3  # the CAM's contribution is non-trivial


def test_resampler_tokens_match_the_original(modules, cases, inputs):
    _, _, res = modules
    with torch.no_grad():
        got = res(inputs["image_embeds"])
    assert got.shape == (1, 16, 1024)
    assert torch.allclose(got, cases["image_tokens"], rtol=0, atol=TOL)
