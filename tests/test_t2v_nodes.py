"""The ModelScopeT2V and I2VGen-XL nodes on the tiny folders written by scripts/make_tiny_models.py."""
from __future__ import annotations

import pytest
import torch

from animevideo.nodes import comfy_bridge as bridge
from animevideo.nodes import t2v as nodes
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.t2v import loader, pipeline

MS = "text-to-video-ms-1.7b"
I2V = "i2vgen-xl"
SMALL = dict(width=64, height=48, num_frames=3, steps=2, guidance_scale=5.0, scheduler="as released", eta=0.0,
             seed=3, decode_chunk_size=2)


@pytest.fixture
def ms_handle(models_env):
    return nodes.AnimeVideoLoadModelScopeT2V().load(MS, "fp32")[0]


@pytest.fixture
def i2v_handle(models_env):
    return nodes.AnimeVideoLoadI2VGenXL().load(I2V, "fp32")[0]


def test_loaders_list_only_their_own_model(models_env):
    assert nodes.folder_names(loader.MODELSCOPE) == [MS]
    assert nodes.folder_names(loader.I2VGENXL) == [I2V]
    names = nodes.AnimeVideoLoadI2VGenXL.INPUT_TYPES()["required"]["model_name"][0]
    assert names == [I2V]


def test_loading_twice_gives_the_cached_model(ms_handle, models_env):
    again = nodes.AnimeVideoLoadModelScopeT2V().load(MS, "fp32")[0]
    assert again.model is ms_handle.model


def test_wrong_or_missing_folders_are_explained(models_env):
    msg = nodes.AnimeVideoLoadI2VGenXL.VALIDATE_INPUTS(MS, "fp32")
    assert isinstance(msg, str) and "is a ModelScopeT2V folder, not I2VGen-XL" in msg
    msg = nodes.AnimeVideoLoadModelScopeT2V.VALIDATE_INPUTS("stable-video-diffusion-img2vid-xt", "fp32")
    assert "its unet is a UNetSpatioTemporalConditionModel" in msg
    msg = nodes.AnimeVideoLoadModelScopeT2V.VALIDATE_INPUTS("nothing-here", "fp32")
    assert "models/diffusers" in msg and "damo-vilab/text-to-video-ms-1.7b" in msg
    assert nodes.AnimeVideoLoadModelScopeT2V.VALIDATE_INPUTS(MS, "fp32") is True
    with pytest.raises(AnimeVideoInputError, match="not allowed"):
        nodes.resolve_folder(loader.MODELSCOPE, "../" + MS)


def test_modelscope_node_gives_frames_and_the_frame_rate(ms_handle, one_thread):
    frames, fps, info = nodes.AnimeVideoModelScopeT2V().generate(ms_handle, "a cat runs", "", fps=8.0,
                                                                 latent_preview=True, **SMALL)
    assert frames.shape == (3, 48, 64, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
    assert fps == 8.0 and isinstance(fps, float)
    assert "ModelScopeT2V: 3 frames at 64x48" in info


def test_i2vgenxl_node_gives_frames_and_its_condition_rate(i2v_handle, one_thread):
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(0)).half()  # fp16 IMAGE
    frames, fps, info = nodes.AnimeVideoI2VGenXL().generate(i2v_handle, image, "she smiles", "blurry", fps=12,
                                                            **SMALL)
    assert frames.shape == (3, 48, 64, 3) and 0.0 <= frames.min() and frames.max() <= 1.0
    assert fps == 12.0 and isinstance(fps, float)
    with pytest.raises(AnimeVideoInputError, match="image: got a batch of 2"):
        nodes.AnimeVideoI2VGenXL().generate(i2v_handle, torch.rand(2, 40, 56, 3), "x", "", fps=12, **SMALL)


def test_core_conditioning_replaces_the_prompt(ms_handle, one_thread):
    """A CONDITIONING holding the model's own text embedding gives the same clip as the prompt widget; one from a
    text encoder of another width is refused, naming the input."""
    model = ms_handle.model
    with torch.inference_mode():
        cond = pipeline.encode_text(model, ["a cat runs"], None)
        uncond = pipeline.encode_text(model, ["dark"], None)
    node = nodes.AnimeVideoModelScopeT2V()
    by_text = node.generate(ms_handle, "a cat runs", "dark", fps=8.0, **SMALL)[0]
    by_cond = node.generate(ms_handle, "ignored", "ignored too", fps=8.0, positive=[[cond, {}]],
                            negative=[[uncond, {}]], **SMALL)[0]
    assert torch.equal(by_text, by_cond)
    # core splits long prompts into 77-token parts: 154 tokens against a 77-token negative still batch
    long = node.generate(ms_handle, "x", "dark", fps=8.0, positive=[[torch.cat([cond, cond], 1), {}]], **SMALL)[0]
    assert torch.allclose(long, by_text, atol=1e-4)  # repeating the tokens leaves attention unchanged
    with pytest.raises(AnimeVideoInputError, match=r"positive: .*\(1, 77, 768\).*needs \[1, tokens, 32\]"):
        node.generate(ms_handle, "x", "", fps=8.0, positive=[[torch.zeros(1, 77, 768), {}]], **SMALL)


def test_cancel_stops_after_the_running_step(ms_handle, one_thread):
    calls = []
    hook = ms_handle.model.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        bridge.request_interrupt()
        with pytest.raises(bridge.AnimeVideoInterrupted):
            nodes.AnimeVideoModelScopeT2V().generate(ms_handle, "a", "", fps=8.0, **{**SMALL, "steps": 10})
    finally:
        hook.remove()
    assert len(calls) == 1  # one batched [uncond, cond] UNet pass, then the interrupt


def test_tiny_models_script_writes_both_folders(tiny_models_dir):
    import os

    for name in (MS, I2V):
        assert loader.folder_kind(os.path.join(tiny_models_dir, "diffusers", name)) is not None
