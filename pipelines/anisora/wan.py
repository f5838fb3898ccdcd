"""AniSora V2/V3/anymask on the Wan2.1-I2V backbone: guide -> packed condition -> flow matching -> frames.

``generate(model, guide, text, request, hooks)`` is the backbone entry point the AniSora sampler node calls.
With only a first-frame guide it computes exactly what diffusers' ``WanImageToVideoPipeline`` computes with the
same scheduler (tested on tiny weights; our UniPC runs on native Wan's time grid, see ``flow_sampler``);
keyframes elsewhere and motion masks only change the packed mask and the guide video (``packing``).
"""
from __future__ import annotations


import torch

from .. import latent_preview
from ..errors import AnimeVideoInputError, AnimeVideoModelError
from . import flow_sampler, packing
from .model import AniSoraHooks, AniSoraModel, AniSoraRequest, AniSoraResult, TextConditioning, on_device
from .text import MAX_TEXT_TOKENS, pad_prompt_embeds

# AutoencoderKLWan tiles in pixels; these are diffusers' defaults (256 px tiles, 192 px stride).
TILE_PX, TILE_STRIDE_PX = 256, 192


def check_text(model: AniSoraModel, text: TextConditioning, cfg: float):
    cfg_t = model.transformer.config
    for name, x in (("positive", text.positive), ("negative", text.negative)):
        if x is not None and x.shape[-1] != cfg_t.text_dim:
            raise AnimeVideoInputError(
                f"{name}: prompt embeddings are {x.shape[-1]}-dimensional but this transformer takes "
                f"{cfg_t.text_dim} (Wan: UMT5-XXL, 4096). Load the text encoder with core's CLIPLoader, type 'wan', "
                "file umt5_xxl_fp8_e4m3fn_scaled.safetensors (or fp16).")
    if cfg > 1.0 and text.negative is None:
        raise AnimeVideoInputError("negative: cfg > 1 needs a negative prompt's CONDITIONING (or set cfg to 1).")
    if cfg_t.image_dim is not None:
        if text.image_embeds is None:
            raise AnimeVideoInputError(
                "clip_vision_output: this Wan I2V transformer cross-attends to CLIP-image tokens of the first "
                "keyframe; connect core's CLIP Vision Encode (clip_vision_h.safetensors, crop none) of that image.")
        if text.image_embeds.shape[-1] != cfg_t.image_dim:
            raise AnimeVideoInputError(
                f"clip_vision_output: {text.image_embeds.shape[-1]}-dimensional image tokens, but this transformer "
                f"takes {cfg_t.image_dim} (Wan: ViT-H/14, clip_vision_h.safetensors).")


def initial_noise(shape, seed: int) -> torch.Tensor:
    """Float32 Gaussian noise from a CPU generator: the same seed gives the same clip on any device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def encode_condition(model: AniSoraModel, cond: packing.WanCondition, hooks: AniSoraHooks) -> torch.Tensor:
    """[1, 20, T_lat, h, w]: packed mask then guide latent (one VAE pass over the zero-filled guide video)."""
    with on_device(model.vae, hooks):
        guide_latent = packing.encode_guide(model.vae, cond.video)
        if hooks.on_preview is not None:
            fit_preview(model)  # while the VAE is on the device anyway (once per model)
    return torch.cat([cond.mask.to(guide_latent.device), guide_latent], dim=1)


def sample_latents(model: AniSoraModel, condition: torch.Tensor, text: TextConditioning, request: AniSoraRequest,
                   hooks: AniSoraHooks, noise: torch.Tensor | None = None) -> torch.Tensor:
    transformer = model.transformer
    dtype = model.dtype
    t_lat, h, w = condition.shape[2:]
    z = transformer.config.out_channels
    if transformer.config.in_channels != z + condition.shape[1]:
        raise AnimeVideoModelError(
            f"The transformer takes {transformer.config.in_channels} input channels, the AniSora Wan condition "
            f"gives {z + condition.shape[1]} (16 noise + 4 mask + 16 guide).")
    if noise is None:
        noise = initial_noise((1, z, t_lat, h, w), request.seed)
    with on_device(transformer, hooks):
        dev = next(transformer.parameters()).device
        latents = noise.to(dev, torch.float32)
        cond = condition.to(dev, torch.float32)
        pos = pad_prompt_embeds(text.positive, MAX_TEXT_TOKENS).to(dev, dtype)
        neg = None if text.negative is None else pad_prompt_embeds(text.negative, MAX_TEXT_TOKENS).to(dev, dtype)
        img = None if text.image_embeds is None else text.image_embeds.to(dev, dtype)

        def velocity(x, t, positive):
            inp = torch.cat([x, cond], dim=1).to(dtype)
            with torch.no_grad():
                return transformer(hidden_states=inp, timestep=t.expand(x.shape[0]),
                                   encoder_hidden_states=pos if positive else neg,
                                   encoder_hidden_states_image=img, return_dict=False)[0]

        scheduler = flow_sampler.make_scheduler(request.sampler, request.shift)
        on_denoised = None
        if hooks.on_preview is not None and "latent_rgb" in model.extras:
            projection = model.extras["latent_rgb"]

            def preview(step, total, x0):
                hooks.on_preview(step, total, latent_preview.preview_rgb(x0[0, :, x0.shape[2] // 2], projection))

            on_denoised = preview

        latents = flow_sampler.sample(velocity, latents, scheduler, request.steps, request.cfg, hooks.on_step,
                                      on_denoised)
    return latents.float()


def fit_preview(model: AniSoraModel) -> torch.Tensor:
    """The latent -> RGB preview map of this model's VAE (normalised latent space), fitted once per model."""
    if "latent_rgb" not in model.extras:
        def encode(pics):
            video = (pics * 2 - 1)[:, :, None]  # [N, 3, 1, H, W] one-frame clips
            return packing.encode_guide(model.vae, video)[:, :, 0]

        model.extras["latent_rgb"] = latent_preview.fit_latent_to_rgb(encode)
    return model.extras["latent_rgb"]


def set_tiling(vae, enabled: bool):
    if enabled:
        vae.enable_tiling(tile_sample_min_height=TILE_PX, tile_sample_min_width=TILE_PX,
                          tile_sample_stride_height=TILE_STRIDE_PX, tile_sample_stride_width=TILE_STRIDE_PX)
    else:
        vae.disable_tiling()


def generate(model: AniSoraModel, guide, text: TextConditioning, request: AniSoraRequest,
             hooks: AniSoraHooks | None = None) -> AniSoraResult:
    hooks = hooks or AniSoraHooks()
    if model.backbone != "wan":
        raise AnimeVideoModelError(f"wan.generate got a '{model.backbone}' model.")
    if request.sampler not in flow_sampler.SAMPLERS:
        raise AnimeVideoInputError(f"sampler: '{request.sampler}' is not one of {', '.join(flow_sampler.SAMPLERS)}.")
    check_text(model, text, request.cfg)
    cond = packing.build_wan_condition(guide, request.num_frames, request.height, request.width,
                                       request.fit)
    set_tiling(model.vae, request.vae_tiling)
    condition = encode_condition(model, cond, hooks)
    latents = sample_latents(model, condition, text, request, hooks)
    with on_device(model.vae, hooks):
        frames = packing.decode_latents(model.vae, latents)
    cfg_note = (f"cfg {request.cfg:g}" if request.cfg > 1 else "cfg 1 (no unconditional pass)")
    info = "\n".join([
        f"AniSora (Wan2.1-I2V backbone, {model.source}): {request.width}x{request.height}, "
        f"{request.steps} {request.sampler} steps, shift {request.shift:g}, {cfg_note}, seed {request.seed}",
        cond.describe(),
    ])
    mean, std = packing.latents_mean_std(model.vae, latents.device, latents.dtype)
    raw = packing.denormalize_latent(latents, mean, std).cpu()
    return AniSoraResult(frames=frames, info=info, latents=raw)
