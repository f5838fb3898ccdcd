"""AniSora on the Wan backbone: guide -> packed condition -> flow matching -> frames. V2/V3/anymask run on
Wan2.1-I2V (one transformer, CLIP-image tokens); V3.2 on Wan2.2-I2V-A14B (a high-noise and a low-noise expert
switched at the boundary timestep, no CLIP-image branch), as diffusers' ``WanImageToVideoPipeline`` with
``transformer_2`` and ``boundary_ratio`` does.

``generate(model, guide, text, request, hooks)`` is the backbone entry point the AniSora sampler node calls.
With only a first-frame guide it computes exactly what diffusers' ``WanImageToVideoPipeline`` computes with the
same scheduler (tested on tiny weights; our UniPC runs on native Wan's time grid, see ``flow_sampler``);
keyframes elsewhere and motion masks only change the packed mask and the guide video (``packing``).
"""
from __future__ import annotations

import contextlib

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
    if model.transformer_2 is not None and model.transformer_2.config.text_dim != cfg_t.text_dim:
        raise AnimeVideoModelError("The two Wan2.2 experts take prompt embeddings of different sizes.")
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


class ExpertSwitch:
    """Which transformer a timestep goes to: Wan2.1 has one; Wan2.2-I2V-A14B sends t >= boundary·1000 to the
    high-noise expert and the rest to the low-noise one (diffusers' WanImageToVideoPipeline and native Wan2.2
    alike). With the hooks' devices set, only the expert at work sits on the device."""

    def __init__(self, model: AniSoraModel, hooks: AniSoraHooks):
        self.high, self.low = model.transformer, model.transformer_2
        self.boundary = None
        if self.low is not None:
            ratio = model.boundary_ratio
            if ratio is None or not 0.0 < ratio < 1.0:
                raise AnimeVideoModelError(f"Wan2.2 experts need a boundary ratio between 0 and 1, got {ratio}.")
            self.boundary = ratio * flow_sampler.NUM_TRAIN_TIMESTEPS
        self.hooks = hooks
        self.current = None
        self._placement = None

    def is_high_noise(self, t) -> bool:
        return self.boundary is None or float(t) >= self.boundary

    def expert_for(self, t) -> torch.nn.Module:
        return self.high if self.is_high_noise(t) else self.low

    def use(self, t) -> torch.nn.Module:
        module = self.expert_for(t)
        if module is not self.current:
            self.close()  # park the expert that is done before the next one comes in
            self._placement = contextlib.ExitStack()
            self._placement.enter_context(on_device(module, self.hooks))
            self.current = module
        return module

    def close(self):
        if self._placement is not None:
            self._placement.close()
        self._placement, self.current = None, None


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
    experts = ExpertSwitch(model, hooks)
    try:
        dev = torch.device(hooks.device) if hooks.device is not None else next(transformer.parameters()).device
        latents = noise.to(dev, torch.float32)
        cond = condition.to(dev, torch.float32)
        pos = pad_prompt_embeds(text.positive, MAX_TEXT_TOKENS).to(dev, dtype)
        neg = None if text.negative is None else pad_prompt_embeds(text.negative, MAX_TEXT_TOKENS).to(dev, dtype)
        # Wan2.2-I2V-A14B has no CLIP-image branch (diffusers passes no image tokens to it either)
        img = None if text.image_embeds is None or transformer.config.image_dim is None \
            else text.image_embeds.to(dev, dtype)

        def velocity(x, t, positive):
            current = experts.use(t)
            inp = torch.cat([x, cond], dim=1).to(dtype)
            with torch.no_grad():
                return current(hidden_states=inp, timestep=t.expand(x.shape[0]),
                               encoder_hidden_states=pos if positive else neg,
                               encoder_hidden_states_image=img, return_dict=False)[0]

        cfg_low = request.cfg if request.cfg_low_noise is None else request.cfg_low_noise

        def cfg_at(t):
            return request.cfg if experts.is_high_noise(t) else cfg_low

        scheduler = flow_sampler.make_scheduler(request.sampler, request.shift)
        on_denoised = None
        if hooks.on_preview is not None and "latent_rgb" in model.extras:
            projection = model.extras["latent_rgb"]

            def preview(step, total, x0):
                hooks.on_preview(step, total, latent_preview.preview_rgb(x0[0, :, x0.shape[2] // 2], projection))

            on_denoised = preview

        latents = flow_sampler.sample(velocity, latents, scheduler, request.steps, cfg_at, hooks.on_step,
                                      on_denoised)
    finally:
        experts.close()
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


def backbone_name(model: AniSoraModel) -> str:
    if model.transformer_2 is not None:
        return "Wan2.2-I2V-A14B backbone, high- and low-noise experts"
    return "Wan2.1-I2V backbone"


def expert_note(model: AniSoraModel, request: AniSoraRequest) -> str:
    """Which steps each Wan2.2 expert ran (from the sampler's own timesteps)."""
    scheduler = flow_sampler.make_scheduler(request.sampler, request.shift)
    scheduler.set_timesteps(int(request.steps))
    switch = ExpertSwitch(model, AniSoraHooks())
    high = sum(1 for t in scheduler.timesteps if switch.is_high_noise(t))
    return (f"experts: high-noise steps 1-{high}, low-noise steps {high + 1}-{len(scheduler.timesteps)} "
            f"(boundary {model.boundary_ratio:g}: t >= {switch.boundary:g} is high-noise)"
            if 0 < high < len(scheduler.timesteps) else
            f"experts: all {len(scheduler.timesteps)} steps on the {'high' if high else 'low'}-noise expert "
            f"(boundary {model.boundary_ratio:g})")


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
    lines = [f"AniSora ({backbone_name(model)}, {model.source}): {request.width}x{request.height}, "
             f"{request.steps} {request.sampler} steps, shift {request.shift:g}, {cfg_note}, seed {request.seed}"]
    if model.transformer_2 is not None:
        lines.append(expert_note(model, request))
        if text.image_embeds is not None:
            lines.append("clip_vision_output: not used (Wan2.2-I2V-A14B has no CLIP-image branch).")
    info = "\n".join(lines + [cond.describe()])
    mean, std = packing.latents_mean_std(model.vae, latents.device, latents.dtype)
    raw = packing.denormalize_latent(latents, mean, std).cpu()
    return AniSoraResult(frames=frames, info=info, latents=raw)
