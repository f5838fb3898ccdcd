"""The nodes as ComfyUI calls them, run here without ComfyUI (the bridge falls back to plain torch)."""
import importlib

import pytest
import torch

from animevideo.nodes import comfy_bridge as bridge
from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.model_cache import MODEL_CACHE

pack = importlib.import_module("animevideo")
nodes_pkg = importlib.import_module("animevideo.nodes")
svd_nodes = importlib.import_module("animevideo.nodes.svd")

SMALL = dict(width=64, height=64, fit="crop", num_frames=3, fps=8.0, motion_bucket_id=127,
             augmentation_level=0.02, steps=2, min_cfg=1.0, max_cfg=2.5, seed=1, decode_chunk_size=2)


def test_pack_exports_only_prefixed_nodes_with_tooltips_and_categories():
    assert nodes_pkg.NODE_CLASS_MAPPINGS
    for node_id, cls in nodes_pkg.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("AnimeVideo")
        assert node_id in nodes_pkg.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("AnimeVideo/")
        assert callable(getattr(cls, cls.FUNCTION))
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert len(value) == 2 and value[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES)


def test_loader_lists_both_layouts_and_caches_the_second_load(models_env):
    names = svd_nodes.AnimeVideoLoadSVD.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert "svd_xt.safetensors" in names and "stable-video-diffusion-img2vid-xt" in names
    first = svd_nodes.AnimeVideoLoadSVD().load("svd_xt.safetensors", "auto")[0]
    hits = MODEL_CACHE.hits
    second = svd_nodes.AnimeVideoLoadSVD().load("svd_xt.safetensors", "fp32")[0]  # auto resolves to fp32 on CPU
    assert second.model is first.model and MODEL_CACHE.hits == hits + 1


def test_svd_loader_does_not_list_the_i2vgen_xl_folder(models_env):
    """I2VGen-XL's diffusers folder has unet/ vae/ image_encoder/ like SVD's; its unet/config.json names another
    UNet class, so Load SVD does not offer it."""
    import os

    from animevideo.pipelines.svd import loader as svd_loader
    from animevideo.pipelines.t2v import tiny as t2v_tiny

    folder = os.path.join(models_env, t2v_tiny.I2VGENXL_FOLDER)
    assert all(os.path.isdir(os.path.join(folder, sub)) for sub in ("unet", "vae", "image_encoder"))
    names = svd_nodes.AnimeVideoLoadSVD.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert os.path.basename(t2v_tiny.I2VGENXL_FOLDER) not in names
    assert "stable-video-diffusion-img2vid-xt" in names
    assert not svd_loader.is_diffusers_svd_folder(folder)


def test_missing_model_message_names_folder_files_and_source(models_env):
    msg = svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt_1_1.safetensors")
    assert isinstance(msg, str)
    for part in (models_env, "checkpoints", "svd_xt.safetensors", "svd_xt_1_1.safetensors", "huggingface.co/stabilityai"):
        assert part in msg
    assert svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS("svd_xt.safetensors") is True


@pytest.mark.parametrize("name", ["../svd_xt.safetensors", "/etc/passwd", "checkpoints/../../x.safetensors"])
def test_model_names_cannot_leave_the_model_folders(models_env, name):
    msg = svd_nodes.AnimeVideoLoadSVD.VALIDATE_INPUTS(name)
    assert isinstance(msg, str) and "ckpt_name" in msg
    with pytest.raises((AnimeVideoInputError, AnimeVideoModelError)):
        svd_nodes.AnimeVideoLoadSVD().load(name, "auto")


@pytest.fixture
def svd_handle(models_env):
    return svd_nodes.AnimeVideoLoadSVD().load("svd_xt.safetensors", "auto")[0]


def test_sampler_outputs_standard_types(svd_handle):
    image = torch.rand(1, 72, 100, 3)
    frames, latent, fps, _info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, image, **SMALL)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    # ComfyUI's SVD latent layout: [frames, 4, h/8, w/8], unscaled VAE space (core's VAE Decode decodes it)
    samples = latent["samples"]
    assert samples.shape == (3, 4, 8, 8)
    vae = svd_handle.model.vae
    with torch.no_grad():
        chunks = [vae.decode(samples[i:i + 2], num_frames=len(samples[i:i + 2])).sample for i in (0, 2)]
        redecoded = (torch.cat(chunks) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(redecoded, frames, rtol=0, atol=1e-5)
    assert fps == 8.0


def test_sizes_that_are_multiples_of_8_but_not_64_work(svd_handle):
    frames, latent, _, _ = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 64, 64, 3),
                                                                    **{**SMALL, "width": 72, "height": 40, "steps": 1})
    assert frames.shape == (3, 40, 72, 3) and latent["samples"].shape == (3, 4, 5, 9)


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes_all_produce_the_requested_size(svd_handle, fit):
    frames, _, _, _ = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 40, 90, 4),
                                                               **{**SMALL, "fit": fit, "width": 96, "steps": 1})
    assert frames.shape == (3, 64, 96, 3)


@pytest.mark.parametrize("change, needle", [
    (dict(width=70), "width: 70 is not a multiple of 8"),
    (dict(height=100), "height: 100 is not a multiple of 8"),
    (dict(num_frames=0), "num_frames"),
    (dict(steps=0), "steps"),
    (dict(fit="zoom"), "fit"),
])
def test_bad_settings_are_named(svd_handle, change, needle):
    with pytest.raises(AnimeVideoInputError) as e:
        svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 64, 64, 3), **{**SMALL, **change})
    assert needle in str(e.value)


def test_image_batch_where_one_image_is_expected(svd_handle):
    with pytest.raises(AnimeVideoInputError) as e:
        svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(2, 64, 64, 3), **SMALL)
    assert "image" in str(e.value) and "batch of 2" in str(e.value)


def test_not_an_image_tensor(svd_handle):
    with pytest.raises(AnimeVideoInputError):
        svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(64, 64, 3), **SMALL)


def test_interrupt_stops_within_one_step(svd_handle, monkeypatch):
    calls = []
    unet = svd_handle.model.unet
    real_forward = unet.forward

    def counting_forward(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            bridge.request_interrupt()
        return real_forward(*a, **k)

    monkeypatch.setattr(unet, "forward", counting_forward)
    with pytest.raises(bridge.AnimeVideoInterrupted):
        svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 64, 64, 3), **{**SMALL, "steps": 20})
    assert len(calls) == 2  # the step that saw the interrupt finished, no further step ran


def test_progress_counts_steps_and_decode_chunks(svd_handle, monkeypatch):
    seen = []
    real_set = bridge.Progress.set

    def spy(self, value, preview_rgb=None):
        real_set(self, value, preview_rgb)
        seen.append((self.value, self.total, preview_rgb is not None))

    monkeypatch.setattr(bridge.Progress, "set", spy)
    svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, torch.rand(1, 64, 64, 3), **{**SMALL, "steps": 3})
    # 3 steps (each with a latent preview), then 2 decode chunks of 2 frames, ending at the total
    assert seen == [(1, 5, True), (2, 5, True), (3, 5, True), (4, 5, False), (5, 5, False)]
