"""AniSora nodes without ComfyUI: tiny models in the real formats under a models/ folder, ComfyUI-shaped
CONDITIONING / CLIP_VISION_OUTPUT values, guide nodes, loader, sampler and prompt nodes."""
import os
from types import SimpleNamespace

import pytest
import torch

from animevideo.nodes import anisora as nodes
from animevideo.nodes import guides as guide_nodes
from animevideo.pipelines.anisora import packing
from animevideo.pipelines.backbones.cogvideox import tiny as cogvideox_tiny
from animevideo.pipelines.backbones.wan import tiny
from animevideo.pipelines.errors import AnimeVideoInputError

H, W = 32, 48


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, one_thread):
    d = str(tmp_path_factory.mktemp("models"))
    tiny.write_tiny_anisora(d, 0)
    tiny.write_diffusers_folder(os.path.join(d, "diffusers", "anisora-tiny-diffusers"),
                                tiny.build_tiny_transformer(0), tiny.build_tiny_vae(0))
    os.makedirs(os.path.join(d, "diffusers", "not-a-model"))
    cogvideox_tiny.write_tiny_cogvideox(d, 0)  # AniSora V1 under its community folder name
    return d


@pytest.fixture
def env(models_dir, monkeypatch):
    monkeypatch.setenv("ANIMEVIDEO_MODELS_DIR", models_dir)
    return models_dir


def conditioning(tokens, seed, dim=tiny.TINY_TEXT_DIM):
    return [[torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None}]]


def clip_vision(seed=0):
    return SimpleNamespace(penultimate_hidden_states=torch.randn(
        1, 257, tiny.TINY_IMAGE_DIM, generator=torch.Generator().manual_seed(seed)))


def first_frame_guide(seed=0):
    img = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(seed))
    return guide_nodes.AnimeVideoKeyframe().add(img, 0, 1.0)[0]


def load(name=tiny.TRANSFORMER_FILE.split("/", 1)[1], vae=tiny.VAE_FILE.split("/", 1)[1]):
    return nodes.AnimeVideoLoadAniSora().load(name, vae, "auto")[0]


def sample_all(model, guide, **kw):
    args = dict(width=W, height=H, num_frames=9, steps=2, cfg=1.0, shift=5.0, sampler="unipc", seed=0,
                clip_vision_output=clip_vision())
    args.update(kw)
    return nodes.AnimeVideoAniSoraSampler().sample(model, conditioning(6, 1), guide, **args)


def sample(model, guide, **kw):
    """(frames, info): the first two outputs, the ones the shipped workflows link."""
    return sample_all(model, guide, **kw)[:2]


def test_combos_list_the_real_file_names(env):
    spec = nodes.AnimeVideoLoadAniSora.INPUT_TYPES()["required"]
    assert "anisora_v3_i2v_14b.safetensors" in spec["transformer_name"][0]
    assert "anisora-tiny-diffusers" in spec["transformer_name"][0]
    assert "not-a-model" not in spec["transformer_name"][0]
    assert spec["vae_name"][0] == [nodes.VAE_FROM_FOLDER, "wan_2.1_vae.safetensors"]
    assert spec["dtype"][0] == ["auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"]


def test_every_input_has_a_tooltip(env):
    for cls in (nodes.AnimeVideoLoadAniSora, nodes.AnimeVideoAniSoraSampler, nodes.AnimeVideoAniSoraPrompt):
        for section in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(section, {}).items():
                assert spec[1].get("tooltip"), f"{cls.__name__}.{name}"


def test_image_to_video_end_to_end(env):
    model = load()
    assert model.model.backbone == "wan"
    frames, info = sample(model, first_frame_guide())
    assert frames.shape == (9, H, W, 3) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert "keyframe at frame 0 -> latent slot 0" in info and "2 unipc steps" in info
    # the same seed gives the same clip, another seed another one
    again, _ = sample(model, first_frame_guide())
    other, _ = sample(model, first_frame_guide(), seed=1)
    assert torch.equal(frames, again) and not torch.equal(frames, other)


def test_fps_and_latent_outputs_chain_into_core(env):
    """fps and latent come after frames and info (saved workflows keep their links); the LATENT is the Wan VAE's
    own latent, so decoding it with the VAE (core's VAE Decode does the same) gives the frames."""
    model = load()
    frames, info, fps, latent = sample_all(model, first_frame_guide())
    assert nodes.AnimeVideoAniSoraSampler.RETURN_TYPES == ("IMAGE", "STRING", "FLOAT", "LATENT")
    assert fps == 16.0
    raw = latent["samples"]
    assert raw.shape == (1, 16, 3, H // 8, W // 8)
    vae = model.model.vae
    with torch.no_grad():
        video = vae.decode(raw.to(next(vae.parameters()).dtype), return_dict=False)[0]
    decoded = (video.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0)
    assert torch.allclose(decoded, frames, atol=1e-4), (decoded - frames).abs().max()
    mean, std = packing.latents_mean_std(vae, "cpu", torch.float32)
    assert (packing.normalize_latent(raw, mean, std) - raw).abs().max() > 0.01  # it is the raw space, not ours


def test_loader_uses_the_cache(env):
    assert load().model is load().model


def test_diffusers_folder_and_snapped_frames(env):
    model = nodes.AnimeVideoLoadAniSora().load("anisora-tiny-diffusers", nodes.VAE_FROM_FOLDER, "fp32")[0]
    g = first_frame_guide()
    g = guide_nodes.AnimeVideoKeyframe().add(torch.rand(1, 16, 24, 3), -1, 1.0, guide=g)[0]
    frames, info = sample(model, g, num_frames=10, sampler="euler", cfg=2.0, negative=conditioning(3, 2))
    assert frames.shape == (9, H, W, 3)
    assert "using 9" in info and "keyframe at frame 8 (asked -1) -> latent slot 2" in info and "cfg 2" in info


def test_localized_animation_with_mask(env):
    g = first_frame_guide()
    mask = torch.zeros(1, H, W)
    mask[:, 8:24, 8:24] = 1.0
    g = guide_nodes.AnimeVideoMotionMask().add(mask, guide=g)[0]
    frames, info = sample(load(), g, num_frames=5)
    assert frames.shape == (5, H, W, 3) and "motion mask" in info


def test_prompt_node_appends_micro_conditions():
    (p,) = nodes.AnimeVideoAniSoraPrompt().build("A girl waves.", 5.5, 3.0, True)
    assert p == "A girl waves. aesthetic score: 5.5. motion score: 3. There is no text in the video."
    (p,) = nodes.AnimeVideoAniSoraPrompt().build("  Rain. ", 6.0, 1.25, False)
    assert p == "Rain. aesthetic score: 6. motion score: 1.25."


def test_user_errors_are_clear(env):
    model = load()
    with pytest.raises(AnimeVideoInputError, match="negative"):
        sample(model, first_frame_guide(), cfg=3.0)
    with pytest.raises(AnimeVideoInputError, match="clip_vision_output"):
        sample(model, first_frame_guide(), clip_vision_output=None)
    with pytest.raises(AnimeVideoInputError, match="frame_index"):
        sample(model, guide_nodes.AnimeVideoKeyframe().add(torch.rand(1, H, W, 3), 12, 1.0)[0])
    with pytest.raises(AnimeVideoInputError, match="positive"):
        nodes.AnimeVideoAniSoraSampler().sample(model, "text", first_frame_guide(), W, H, 9, 1, 1.0, 5.0, "unipc", 0)
    with pytest.raises(AnimeVideoInputError, match="anisora_model"):
        sample(object(), first_frame_guide())


def test_validate_inputs_names_the_missing_file(env):
    v = nodes.AnimeVideoLoadAniSora.VALIDATE_INPUTS
    assert v("anisora_v3_i2v_14b.safetensors", "wan_2.1_vae.safetensors", "auto") is True
    msg = v("missing.safetensors", "wan_2.1_vae.safetensors", "auto")
    assert "transformer_name" in msg and "models/diffusion_models" in msg
    msg = v("anisora_v3_i2v_14b.safetensors", nodes.VAE_FROM_FOLDER, "auto")
    assert "vae_name" in msg and "Wan2.1 VAE" in msg
    assert "vae_name" in v("anisora_v3_i2v_14b.safetensors", "nope.pth", "auto")
    assert "dtype" in v("anisora_v3_i2v_14b.safetensors", "wan_2.1_vae.safetensors", "int4")
    assert "not allowed" in v("../x.safetensors", "wan_2.1_vae.safetensors", "auto")


def test_backbone_dispatch_to_cogvideox(env, monkeypatch):
    calls = []
    fake = SimpleNamespace(generate=lambda model, guide, text, req, hooks: calls.append(req) or
                           SimpleNamespace(frames=torch.zeros(9, H, W, 3), info="cogvideox ran",
                                           latents=torch.zeros(1, 16, 3, 2, 2)))
    import animevideo.pipelines.anisora as pkg

    monkeypatch.setitem(__import__("sys").modules, "animevideo.pipelines.anisora.cogvideox", fake)
    monkeypatch.setattr(pkg, "cogvideox", fake, raising=False)
    handle = load()
    cog = nodes.AniSoraHandle(SimpleNamespace(backbone="cogvideox", transformer=torch.nn.Linear(1, 1),
                                              vae=torch.nn.Linear(1, 1), to=lambda d: None), False)
    frames, info = sample(cog, first_frame_guide(), steps=3)
    assert info.startswith("cogvideox ran") and calls[0].steps == 3 and frames.shape[0] == 9
    # V1's own DynamicCFG (SAT and diffusers: x = (steps - t)/steps with the DDPM timestep) is what the node runs
    assert calls[0].dynamic_cfg and calls[0].dynamic_cfg_timestep_quirk
    sample(cog, first_frame_guide(), steps=3, dynamic_cfg_timestep_quirk=False)  # the switch reaches the sampler
    assert not calls[1].dynamic_cfg_timestep_quirk
    assert handle.model.backbone == "wan"


def test_registered_in_the_pack():
    import animevideo.nodes as pack

    for name in ("AnimeVideoLoadAniSora", "AnimeVideoAniSoraSampler", "AnimeVideoAniSoraPrompt"):
        assert name in pack.NODE_CLASS_MAPPINGS and name in pack.NODE_DISPLAY_NAME_MAPPINGS


def test_latent_preview_reaches_the_progress_bar(env, monkeypatch):
    shown = []
    real_set = nodes.bridge.Progress.set

    def spy(self, value, preview_rgb=None):
        if preview_rgb is not None:
            shown.append((value, tuple(preview_rgb.shape), preview_rgb.dtype))
        return real_set(self, value, preview_rgb)

    monkeypatch.setattr(nodes.bridge.Progress, "set", spy)
    handle = load()
    sample(handle, first_frame_guide(), steps=2, latent_preview=True)
    assert [v for v, _, _ in shown] == [2, 3] and all(s[-1] == 3 and d == torch.uint8 for _, s, d in shown)
    assert "latent_rgb" in handle.model.extras  # fitted once, then reused
    shown.clear()
    sample(handle, first_frame_guide(), steps=2, latent_preview=False)
    assert shown == []


def test_a_fresh_loader_defaults_to_the_wan_vae_a_single_file_needs(env):
    spec = nodes.AnimeVideoLoadAniSora.INPUT_TYPES()["required"]
    assert spec["vae_name"][1]["default"] == "wan_2.1_vae.safetensors"
    single = "anisora_v3_i2v_14b.safetensors"
    assert nodes.AnimeVideoLoadAniSora.VALIDATE_INPUTS(single, spec["vae_name"][1]["default"]) is True
    assert nodes.default_vae([nodes.VAE_FROM_FOLDER]) == nodes.VAE_FROM_FOLDER  # nothing in models/vae
    assert nodes.default_vae([nodes.VAE_FROM_FOLDER, "a_vae.safetensors", "Wan2.1_VAE.pth"]) == "Wan2.1_VAE.pth"


def test_no_previews_when_comfyuis_preview_method_is_none(env, monkeypatch):
    shown = []
    real_set = nodes.bridge.Progress.set

    def spy(self, value, preview_rgb=None):
        shown.append(preview_rgb is not None)
        return real_set(self, value, preview_rgb)

    monkeypatch.setattr(nodes.bridge.Progress, "set", spy)
    monkeypatch.setattr(nodes.bridge, "previews_enabled", lambda: False)
    handle = load()
    handle.model.extras.pop("latent_rgb", None)
    sample(handle, first_frame_guide(), steps=2, latent_preview=True)
    assert shown and not any(shown)
    assert "latent_rgb" not in handle.model.extras  # not even the preview map was fitted


def test_v1_cogvideox_nodes_end_to_end_equal_diffusers_pipeline(env):
    """AniSora V1 through the real nodes (no fake module): Load AniSora on the tiny CogVideoX-5B-I2V-layout folder,
    Keyframe at frame 0, AniSora Sampler with V1's defaults (DPM, DynamicCFG with the timestep quirk, a zero
    negative as ConditioningZeroOut gives). Reference: diffusers' CogVideoXImageToVideoPipeline with the folder's
    components loaded by diffusers itself and the prompt embeddings zero-padded to 226 as the node does.
    Tolerance 1e-4 as the pipeline-level parity tests (measured: 0.0, bit-identical)."""
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline,
                           CogVideoXTransformer3DModel)

    size, frames_n, steps, cfg, seed = 64, 9, 3, 6.0, 5
    name = cogvideox_tiny.FOLDER.split("/", 1)[1]
    handle = nodes.AnimeVideoLoadAniSora().load(name, nodes.VAE_FROM_FOLDER, "auto")[0]
    assert handle.model.backbone == "cogvideox"
    img = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(7))
    guide = guide_nodes.AnimeVideoKeyframe().add(img, 0, 1.0)[0]
    pos = conditioning(7, 3, dim=cogvideox_tiny.TINY_TRANSFORMER["text_embed_dim"])
    neg = [[torch.zeros_like(pos[0][0]), {"pooled_output": None}]]
    frames, info, fps, latent = nodes.AnimeVideoAniSoraSampler().sample(
        handle, pos, guide, size, size, frames_n, steps, cfg, 5.0, "unipc", seed, negative=neg)
    assert frames.shape == (frames_n, size, size, 3) and frames.dtype == torch.float32
    # V1's LATENT: the CogVideoX VAE's own latent [1, C, T, h, w] (what its decoder takes)
    assert fps == 16.0 and latent["samples"].shape[:3] == (1, 16, (frames_n - 1) // 4 + 1)
    assert "AniSora V1" in info and "DynamicCFG" in info and "latent slot 0" in info

    folder = os.path.join(env, cogvideox_tiny.FOLDER)
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=None, text_encoder=None,
        vae=AutoencoderKLCogVideoX.from_pretrained(folder, subfolder="vae"),
        transformer=CogVideoXTransformer3DModel.from_pretrained(folder, subfolder="transformer"),
        scheduler=CogVideoXDPMScheduler.from_pretrained(folder, subfolder="scheduler"))
    pipe.set_progress_bar_config(disable=True)
    padded = torch.cat([pos[0][0], torch.zeros(1, 226 - 7, pos[0][0].shape[-1])], dim=1)
    ref = pipe(image=img.permute(0, 3, 1, 2), prompt_embeds=padded, negative_prompt_embeds=torch.zeros_like(padded),
               height=size, width=size, num_frames=frames_n, num_inference_steps=steps, guidance_scale=cfg,
               use_dynamic_cfg=True, generator=torch.Generator().manual_seed(seed), output_type="pt").frames[0]
    ref = ref.permute(0, 2, 3, 1)
    assert ref.std() > 0.05  # a real video, not a constant
    assert (frames - ref).abs().max() <= 1e-4
