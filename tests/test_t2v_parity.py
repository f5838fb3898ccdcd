"""ModelScopeT2V and I2VGen-XL against diffusers' own pipelines on the same tiny folder and the same noise.

The references are diffusers' ``TextToVideoSDPipeline`` and ``I2VGenXLPipeline`` loaded with ``from_pretrained``
from the folder the pack's loader reads; our sampler shares no code with them beyond the UNet/VAE/CLIP modules and
the scheduler class the folder names. Every run has CFG with a negative prompt and (where the scheduler takes it)
DDIM eta > 0, so the scheduler's stochastic steps, the guidance combination and the text encoding all take part.
"""
from __future__ import annotations

import os
import re

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.t2v import loader, pipeline, sampler, tiny

TOL = 1e-4  # float32, max abs difference of the 0..1 frames


@pytest.fixture(scope="module")
def t2v_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("t2v_models"))
    tiny.write_tiny_t2v(root)
    return root


@pytest.fixture(scope="module")
def ms_path(t2v_root):
    return os.path.join(t2v_root, tiny.MODELSCOPE_FOLDER)


@pytest.fixture(scope="module")
def i2v_path(t2v_root):
    return os.path.join(t2v_root, tiny.I2VGENXL_FOLDER)


@pytest.fixture(scope="module")
def ms_model(ms_path):
    return loader.load_modelscope(ms_path, torch.float32)


@pytest.fixture(scope="module")
def i2v_model(i2v_path):
    return loader.load_i2vgenxl(i2v_path, torch.float32)


def reference_frames(out) -> torch.Tensor:
    """diffusers' output_type='pt' video [1, F, 3, H, W] -> [F, H, W, 3]."""
    return out.frames[0].permute(0, 2, 3, 1).float()


def diffusers_modelscope(path, scheduler_choice):
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    if scheduler_choice != "as released":
        pipe.scheduler = sampler.make_scheduler(dict(pipe.scheduler.config, _class_name="DDIMScheduler"),
                                                scheduler_choice)
    return pipe


def diffusers_i2vgenxl(path):
    from diffusers import I2VGenXLPipeline

    pipe = I2VGenXLPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    # The deprecated pipeline reads text_encoder.text_model.final_layer_norm (transformers 4's nesting);
    # transformers 5's CLIPTextModel holds final_layer_norm itself. Same module, reached by the old path.
    if not hasattr(pipe.text_encoder, "text_model"):
        object.__setattr__(pipe.text_encoder, "text_model", pipe.text_encoder)
    return pipe


@pytest.mark.parametrize("choice", ["as released", "dpm++ 2m"])
def test_modelscope_matches_diffusers(ms_model, ms_path, choice, one_thread):
    req = pipeline.T2VRequest(prompt="a girl waves, anime", negative_prompt="blurry", width=64, height=48,
                              num_frames=3, steps=3, guidance_scale=7.5, eta=0.7, seed=11, scheduler=choice)
    ours = pipeline.text_to_video(ms_model, req).frames
    pipe = diffusers_modelscope(ms_path, choice)
    ref = reference_frames(pipe(req.prompt, negative_prompt=req.negative_prompt, height=48, width=64, num_frames=3,
                                num_inference_steps=3, guidance_scale=7.5, eta=0.7,
                                generator=torch.Generator().manual_seed(11), output_type="pt"))
    assert ours.shape == ref.shape == (3, 48, 64, 3)
    diff = (ours - ref).abs().max().item()
    assert diff <= TOL, f"max |ours - diffusers| = {diff:.2e}"
    assert ours.std() > 0.05  # a real picture, not a constant that would match anything


@pytest.mark.parametrize("guidance", [6.0, 1.0])
def test_i2vgenxl_matches_diffusers(i2v_model, i2v_path, guidance, one_thread):
    image = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))  # not the output aspect
    req = pipeline.T2VRequest(prompt="she turns her head", negative_prompt="static", width=64, height=48,
                              num_frames=4, steps=3, guidance_scale=guidance, eta=0.5, seed=21, fps=12)
    ours = pipeline.image_to_video(i2v_model, image, req).frames
    pipe = diffusers_i2vgenxl(i2v_path)
    # diffusers draws the VAE posterior sample from the global RNG; ours from its own generator seeded seed + 1
    torch.manual_seed(req.seed + 1)
    ref = reference_frames(pipe(req.prompt, image=image, negative_prompt=req.negative_prompt, height=48, width=64,
                                target_fps=12, num_frames=4, num_inference_steps=3, guidance_scale=guidance, eta=0.5,
                                generator=torch.Generator().manual_seed(21), output_type="pt"))
    assert ours.shape == ref.shape == (4, 48, 64, 3)
    diff = (ours - ref).abs().max().item()
    assert diff <= TOL, f"max |ours - diffusers| = {diff:.2e}"
    assert ours.std() > 0.05


def test_i2vgenxl_fps_and_image_condition_the_clip(i2v_model, one_thread):
    """The frame-rate micro-condition and the image both reach the UNet (a model that ignored either would still
    pass a parity test whose reference ignored it too only by accident; here they must change the output)."""
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(4))
    base = pipeline.T2VRequest(prompt="x", width=64, height=48, num_frames=3, steps=2, guidance_scale=3.0, seed=1)
    a = pipeline.image_to_video(i2v_model, image, base).latents
    b = pipeline.image_to_video(i2v_model, image, pipeline.T2VRequest(**{**base.__dict__, "fps": 4})).latents
    c = pipeline.image_to_video(i2v_model, 1 - image, base).latents
    assert (a - b).abs().max() > 1e-4
    assert (a - c).abs().max() > 1e-4


def test_steps_report_progress_and_cancel_stops_between_steps(ms_model, one_thread):
    seen = []

    class Cancelled(Exception):
        pass

    def on_step(info):
        seen.append((info.step, info.total))
        if info.step == 1:
            raise Cancelled

    req = pipeline.T2VRequest(prompt="a", width=32, height=32, num_frames=2, steps=5, seed=0)
    with pytest.raises(Cancelled):
        pipeline.text_to_video(ms_model, req, pipeline.T2VHooks(on_step=on_step))
    assert seen == [(0, 5), (1, 5)]


def test_empty_and_long_prompts_are_allowed_and_explained(ms_model, one_thread):
    req = pipeline.T2VRequest(prompt="", width=32, height=32, num_frames=2, steps=1)
    out = pipeline.text_to_video(ms_model, req)
    assert out.frames.shape == (2, 32, 32, 3)
    assert any("prompt is empty" in n for n in out.notes)
    long = pipeline.T2VRequest(prompt="word " * 100, width=32, height=32, num_frames=2, steps=1)
    assert any("cut to the text encoder's 77" in n for n in pipeline.text_to_video(ms_model, long).notes)


@pytest.mark.parametrize("field,value,needle", [
    ("width", 60, "width: 60 is not a multiple of 8"),
    ("num_frames", 0, "num_frames: 0"),
    ("steps", 0, "steps: 0"),
    ("eta", 1.5, "eta: 1.5"),
    ("scheduler", "lms", "scheduler: 'lms'"),
])
def test_bad_requests_name_the_input(ms_model, field, value, needle):
    req = pipeline.T2VRequest(prompt="a", width=32, height=32, num_frames=2, steps=1)
    setattr(req, field, value)
    with pytest.raises(AnimeVideoInputError, match=re.escape(needle)):
        pipeline.text_to_video(ms_model, req)


def test_models_are_told_apart_by_their_files(ms_path, i2v_path, ms_model, tmp_path):
    assert loader.folder_kind(ms_path) == loader.MODELSCOPE
    assert loader.folder_kind(i2v_path) == loader.I2VGENXL
    with pytest.raises(AnimeVideoModelError, match="is a ModelScopeT2V folder, not I2VGen-XL"):
        loader.load_i2vgenxl(ms_path, torch.float32)
    with pytest.raises(AnimeVideoModelError, match="is a I2VGen-XL folder, not ModelScopeT2V"):
        loader.load_modelscope(i2v_path, torch.float32)
    with pytest.raises(AnimeVideoInputError, match="needs an I2VGen-XL model"):
        pipeline.image_to_video(ms_model, torch.rand(1, 3, 8, 8), pipeline.T2VRequest())
    # an SVD folder (another UNet class) and an empty folder: the message says what was found
    svd = tmp_path / "stable-video-diffusion-img2vid-xt"
    (svd / "unet").mkdir(parents=True)
    (svd / "unet" / "config.json").write_text('{"_class_name": "UNetSpatioTemporalConditionModel"}')
    with pytest.raises(AnimeVideoModelError, match="its unet is a UNetSpatioTemporalConditionModel"):
        loader.load_modelscope(str(svd), torch.float32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnimeVideoModelError, match="has no unet/config.json"):
        loader.load_i2vgenxl(str(tmp_path / "empty"), torch.float32)


def test_a_text_encoder_of_another_width_is_refused(ms_path, tmp_path):
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModel

    bad = tmp_path / "mixed"
    shutil.copytree(ms_path, bad)
    shutil.rmtree(bad / "text_encoder")
    CLIPTextModel(CLIPTextConfig(**dict(tiny.text_config(2), hidden_size=48, projection_dim=48))).save_pretrained(
        bad / "text_encoder")
    with pytest.raises(AnimeVideoModelError,
                       match="text_encoder hidden size is 48 but the unet cross_attention_dim is 32"):
        loader.load_modelscope(str(bad), torch.float32)


# ---------------------------------------------------------------------------------------------
# The released layouts at full size, on the meta device
# ---------------------------------------------------------------------------------------------

def _pattern(key: str) -> str:
    return re.sub(r"\.\d+(?=\.)", ".N", key)


def _released_modules(kind):
    from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        if kind == loader.MODELSCOPE:
            return {"unet": UNet3DConditionModel(**tiny.FULL_MODELSCOPE_UNET), "vae": AutoencoderKL(**tiny.FULL_VAE),
                    "text_encoder": CLIPTextModel(CLIPTextConfig(**tiny.FULL_MODELSCOPE_TEXT))}
        return {"unet": I2VGenXLUNet(**tiny.FULL_I2VGENXL_UNET), "vae": AutoencoderKL(**tiny.FULL_VAE),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**tiny.FULL_I2VGENXL_TEXT)),
                "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny.FULL_I2VGENXL_IMAGE))}


@pytest.mark.parametrize("kind,folder", [(loader.MODELSCOPE, tiny.MODELSCOPE_FOLDER),
                                         (loader.I2VGENXL, tiny.I2VGENXL_FOLDER)])
def test_tiny_folders_have_the_released_key_tables(t2v_root, kind, folder):
    """Each tiny component file holds the full-size released module's keys (block indices aside), with the
    text tower under transformers 4's ``text_model.`` level as the released files have it; and the full-size
    components fit each other under the loader's width checks."""
    from safetensors import safe_open

    full = _released_modules(kind)
    loader.check_widths(kind, full["unet"], full["text_encoder"], full.get("image_encoder"), full["vae"], kind)
    for sub, module in full.items():
        released = {_pattern(k) for k in module.state_dict()}
        if sub == "text_encoder":
            released = {k if k.startswith("text_model.") else "text_model." + k for k in released}
        name = "model.safetensors" if sub.endswith("encoder") else "diffusion_pytorch_model.safetensors"
        with safe_open(os.path.join(t2v_root, folder, sub, name), framework="pt") as f:
            written = {_pattern(k) for k in f.keys()}
        assert written == released, (sub, sorted(written ^ released)[:6])
    assert sorted(os.listdir(os.path.join(t2v_root, folder))) == sorted(list(loader.COMPONENTS[kind]) +
                                                                          ["model_index.json"])
