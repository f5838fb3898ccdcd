"""The upscale nodes as ComfyUI calls them, run here without ComfyUI (the bridge falls back to plain torch)."""
import importlib
import os
import shutil

import pytest
import torch

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.model_cache import MODEL_CACHE
from animevideo.pipelines.upscale import stream, tiny

up_nodes = importlib.import_module("animevideo.nodes.upscale")
Load, Upscale = up_nodes.AnimeVideoLoadUpscaler, up_nodes.AnimeVideoUpscale
ARGS = dict(chunk_size=2, tile_size=0, input_rescaling=1.0, output_scale=0.0)


@pytest.fixture(scope="module")
def upscale_dir(tmp_path_factory, tiny_models_dir):
    d = str(tmp_path_factory.mktemp("models"))
    tiny.write_tiny_upscalers(d)
    ups = os.path.join(d, "upscale_models")
    # a real (tiny) SVD checkpoint, a file of unrelated tensors and an interrupted download
    shutil.copy(os.path.join(tiny_models_dir, "checkpoints", "svd_xt.safetensors"), os.path.join(ups, "svd_xt.safetensors"))
    torch.save({"head.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, os.path.join(ups, "classifier.pth"))
    with open(os.path.join(ups, "realesr-animevideov3.pth"), "rb") as f:
        data = f.read()
    with open(os.path.join(ups, "half_downloaded.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    return d


@pytest.fixture
def env(upscale_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", upscale_dir)
    monkeypatch.setenv("ANIMEVIDEO_DEVICE", "cpu")
    return upscale_dir


def clip(n, h, w, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def load(name, dtype="auto"):
    return Load().load(name, dtype)[0]


def test_nodes_are_exported_with_tooltips_and_category():
    assert set(up_nodes.NODE_CLASS_MAPPINGS) == {"AnimeVideoLoadUpscaler", "AnimeVideoUpscale"}
    for node_id, cls in up_nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id in up_nodes.NODE_DISPLAY_NAME_MAPPINGS and cls.CATEGORY == "AnimeVideo/Upscale"
        assert callable(getattr(cls, cls.FUNCTION)) and cls.DESCRIPTION
        for section in ("required", "optional"):
            for name, value in cls.INPUT_TYPES().get(section, {}).items():
                assert len(value) == 2 and value[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert Upscale.RETURN_TYPES == ("IMAGE",)


def test_loader_lists_the_upscale_models_folder(env):
    names = Load.INPUT_TYPES()["required"]["model_name"][0]
    for rel in tiny.TINY_FILES:
        assert os.path.basename(rel) in names


@pytest.mark.parametrize("name,arch,kind", [("AnimeSR_v2.pth", "AnimeSR", "animesr"),
                                            ("realesr-animevideov3.pth", "RealESRGAN Compact", "spandrel"),
                                            ("RealESRGAN_x4plus_anime_6B.pth", "ESRGAN", "spandrel")])
def test_architecture_is_detected_from_the_weights(env, name, arch, kind):
    handle = load(name)
    assert handle.upscaler.arch_name == arch and handle.upscaler.kind == kind and handle.upscaler.scale == 4
    renamed = os.path.join(env, "upscale_models", "renamed_" + name)
    shutil.copy(os.path.join(env, "upscale_models", name), renamed)
    try:
        assert load("renamed_" + name).upscaler.arch_name == arch
    finally:
        os.remove(renamed)


def test_second_load_comes_from_the_cache_and_cpu_runs_fp32(env):
    first = load("AnimeSR_v2.pth")
    hits = MODEL_CACHE.hits
    assert load("AnimeSR_v2.pth").upscaler is first.upscaler and MODEL_CACHE.hits == hits + 1
    assert first.upscaler.dtype == torch.float32
    assert load("AnimeSR_v2.pth", "fp16").upscaler.dtype == torch.float32  # fp16 asked for on a CPU


def test_missing_model_message_names_folder_files_and_source(env):
    msg = Load.VALIDATE_INPUTS("AnimeSR_v1-PaperModel.pth")
    assert isinstance(msg, str)
    for part in (env, "upscale_models", "AnimeSR_v2.pth", "realesr-animevideov3.pth", "github.com/TencentARC/AnimeSR"):
        assert part in msg
    assert Load.VALIDATE_INPUTS("AnimeSR_v2.pth") is True
    assert "dtype" in Load.VALIDATE_INPUTS("AnimeSR_v2.pth", "fp8")


@pytest.mark.parametrize("name", ["../upscale_models/AnimeSR_v2.pth", "/etc/passwd", "a/../../x.pth"])
def test_model_names_cannot_leave_the_model_folder(env, name):
    msg = Load.VALIDATE_INPUTS(name)
    assert isinstance(msg, str) and "model_name" in msg
    with pytest.raises((AnimeVideoInputError, AnimeVideoModelError)):
        Load().load(name, "auto")


@pytest.mark.parametrize("name,needle", [("svd_xt.safetensors", "Stable Video Diffusion"),
                                         ("classifier.pth", "unknown model"),
                                         ("half_downloaded.pth", "damaged")])
def test_a_file_that_is_not_an_upscaler_is_a_clear_error(env, name, needle):
    with pytest.raises(AnimeVideoModelError) as e:
        Load().load(name, "auto")
    assert needle in str(e.value) and name in str(e.value)
    if needle != "damaged":
        assert "AnimeSR_v2.pth" in str(e.value)  # what would work


@pytest.mark.parametrize("name", ["realesr-animevideov3.pth", "RealESRGAN_x4plus_anime_6B.pth"])
def test_real_esrgan_node_output_equals_spandrel_called_directly(env, name):
    import spandrel

    frames = clip(3, 12, 16, seed=1)
    got = Upscale().upscale(load(name), frames, **ARGS)[0]
    desc = spandrel.ModelLoader().load_from_file(os.path.join(env, "upscale_models", name)).eval()
    with torch.no_grad():
        ref = torch.cat([desc(frames[i:i + 1].permute(0, 3, 1, 2)) for i in range(3)]).permute(0, 2, 3, 1)
    assert got.shape == (3, 48, 64, 3) and got.dtype == torch.float32
    assert torch.equal(got, ref)


def test_animesr_node_output_equals_the_module_on_the_whole_clip(env):
    handle = load("AnimeSR_v2.pth")
    frames = clip(5, 16, 16, seed=2)
    got = Upscale().upscale(handle, frames, **ARGS)[0]
    with torch.no_grad():
        ref = handle.upscaler.model(frames.permute(0, 3, 1, 2)[None].contiguous())[0].clamp(0, 1)
    torch.testing.assert_close(got, ref.permute(0, 2, 3, 1), rtol=0, atol=1e-5)  # channels-last rounding only
    for chunk in (1, 3, 8):
        assert torch.equal(Upscale().upscale(handle, frames, **{**ARGS, "chunk_size": chunk})[0], got)


def test_one_frame_and_odd_sizes_through_the_node(env):
    for name in ("AnimeSR_v2.pth", "realesr-animevideov3.pth"):
        assert Upscale().upscale(load(name), clip(1, 17, 23), **ARGS)[0].shape == (1, 68, 92, 3)


def test_rescaling_and_tiles_through_the_node(env):
    out = Upscale().upscale(load("AnimeSR_v2.pth"), clip(2, 40, 48), **{**ARGS, "input_rescaling": 0.5,
                                                                          "output_scale": 2.0})[0]
    assert out.shape == (2, 80, 96, 3)
    out = Upscale().upscale(load("realesr-animevideov3.pth"), clip(2, 40, 48),
                            **{**ARGS, "tile_size": 32}, tile_overlap=8)[0]
    assert out.shape == (2, 160, 192, 3)


@pytest.mark.parametrize("change,needle", [(dict(chunk_size=0), "chunk_size"), (dict(tile_size=8), "tile_size"),
                                           (dict(input_rescaling=0.0), "input_rescaling"),
                                           (dict(output_scale=-2.0), "output_scale")])
def test_bad_settings_are_named(env, change, needle):
    with pytest.raises(AnimeVideoInputError, match=f"^{needle}:"):
        Upscale().upscale(load("AnimeSR_v2.pth"), clip(2, 8, 8), **{**ARGS, **change})


def test_wrong_wire_is_named(env):
    with pytest.raises(AnimeVideoInputError, match="^upscaler:"):
        Upscale().upscale(object(), clip(2, 8, 8), **ARGS)


def test_progress_counts_frames_and_interrupt_stops_between_frames(env, monkeypatch):
    handle = load("AnimeSR_v2.pth")
    seen = []
    real_set = bridge.Progress.set

    def spy(self, value, preview_rgb=None):
        real_set(self, value, preview_rgb)
        seen.append((self.value, self.total))

    monkeypatch.setattr(bridge.Progress, "set", spy)
    Upscale().upscale(handle, clip(4, 8, 8), **ARGS)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    calls = []
    model = handle.upscaler.model
    real_cell = model.cell

    def counting_cell(*a):
        calls.append(1)
        if len(calls) == 2:
            bridge.request_interrupt()
        return real_cell(*a)

    monkeypatch.setattr(model, "cell", counting_cell)
    with pytest.raises(bridge.AnimeVideoInterrupted):
        Upscale().upscale(handle, clip(6, 8, 8), **ARGS)
    assert len(calls) == 2  # the frame that saw the interrupt finished, no further frame ran


def test_model_waits_on_the_offload_device_after_a_run(env):
    handle = load("realesr-animevideov3.pth")
    Upscale().upscale(handle, clip(1, 8, 8), **ARGS)
    assert handle.upscaler.device == bridge.offload_device()


def test_stream_module_constants_match_the_node_spec():
    spec = Upscale.INPUT_TYPES()["required"]
    assert spec["output_scale"][1]["max"] == stream.MAX_OUTPUT_SCALE
    assert spec["input_rescaling"][1]["max"] == 1.0
