"""The StreamingT2V nodes as ComfyUI calls them, run without ComfyUI against the tiny released-layout checkpoint."""
import importlib
import os
import shutil

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.model_cache import MODEL_CACHE
from animevideo.pipelines.streaming_t2v import tiny

nodes = importlib.import_module("animevideo.nodes.streaming_t2v")
bridge = importlib.import_module("animevideo.nodes.comfy_bridge")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stt2v_models")
    tiny.write_tiny_models(str(d))
    return str(d)


@pytest.fixture
def env(models_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", models_dir)
    yield models_dir
    MODEL_CACHE.clear()


def _extend(handle, clip, **kw):
    args = dict(prompt="a girl waves", negative_prompt="", target_frames=20, steps=1, cfg=7.5, seed=1, fps=12.0,
                size=32)
    args.update(kw)
    return nodes.AnimeVideoStreamingT2VExtend().extend(handle, clip, **args)


def test_loader_lists_and_loads_the_released_name(env):
    spec = nodes.AnimeVideoLoadStreamingT2V.INPUT_TYPES()["required"]["ckpt_name"]
    assert tiny.FILE_NAME in spec[0] and spec[1]["default"] == tiny.FILE_NAME
    assert nodes.AnimeVideoLoadStreamingT2V.VALIDATE_INPUTS(tiny.FILE_NAME, "fp32") is True
    assert "was not found in models/streaming_t2v" in nodes.AnimeVideoLoadStreamingT2V.VALIDATE_INPUTS("x.ckpt")


def test_extend_node_carries_fps_and_says_what_it_made(env):
    (handle,) = nodes.AnimeVideoLoadStreamingT2V().load(tiny.FILE_NAME, "fp32")
    clip = torch.rand(25, 40, 60, 3)  # SVD-XT-like: 25 frames, wide
    frames, fps, info = _extend(handle, clip)
    assert frames.shape == (24, 32, 32, 3) and fps == 12.0  # 16 kept + 1 chunk of 8 (20 rounded up)
    assert "asked for 20 frames" in info and "made 24 frames" in info and "first 16 of 25 frames" in info
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0


def test_bad_inputs_name_the_input(env):
    (handle,) = nodes.AnimeVideoLoadStreamingT2V().load(tiny.FILE_NAME, "fp32")
    with pytest.raises(AnimeVideoInputError, match="prompt: empty"):
        _extend(handle, torch.rand(16, 32, 32, 3), prompt="  ")
    with pytest.raises(AnimeVideoInputError, match="at least 8"):
        _extend(handle, torch.rand(5, 32, 32, 3))
    with pytest.raises(AnimeVideoInputError, match="size: 40"):
        _extend(handle, torch.rand(16, 32, 32, 3), size=40)


def test_missing_tokenizer_is_explained(env, tmp_path, monkeypatch):
    folder = tmp_path / "streaming_t2v"
    folder.mkdir()
    shutil.copy(os.path.join(env, tiny.FOLDER, tiny.FILE_NAME), folder / tiny.FILE_NAME)
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", str(tmp_path))
    (handle,) = nodes.AnimeVideoLoadStreamingT2V().load(tiny.FILE_NAME, "fp32")
    with pytest.raises(AnimeVideoModelError, match="No tokenizer for StreamingT2V"):
        _extend(handle, torch.rand(16, 32, 32, 3))


def test_cancel_stops_within_a_step(env, monkeypatch):
    (handle,) = nodes.AnimeVideoLoadStreamingT2V().load(tiny.FILE_NAME, "fp32")
    calls = {"n": 0}
    real = handle.model.predict_noise

    def counting(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            bridge.request_interrupt()  # the user presses Cancel during the second step
        return real(*a, **kw)

    monkeypatch.setattr(handle.model, "predict_noise", counting)
    with pytest.raises(bridge.AnimeVideoInterrupted):
        _extend(handle, torch.rand(16, 32, 32, 3), target_frames=40, steps=5)
    assert calls["n"] == 2  # nothing ran after the step in which Cancel came


def test_fp16_clip_gives_the_same_frames(env):
    (handle,) = nodes.AnimeVideoLoadStreamingT2V().load(tiny.FILE_NAME, "fp32")
    clip = torch.rand(16, 32, 32, 3, generator=torch.Generator().manual_seed(4)).half().float()  # exact in fp16
    a = _extend(handle, clip, target_frames=24)
    b = _extend(handle, clip.half(), target_frames=24)
    assert a[0].dtype == b[0].dtype == torch.float32 and torch.equal(a[0], b[0]) and a[1:] == b[1:]
