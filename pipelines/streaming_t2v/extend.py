"""StreamingT2V's autoregressive extension (official ``video_ldm.py::VideoLDM.predict_step`` and
``pipeline_text_to_video_w_controlnet_synth.py::TextToVideoSDPipeline.__call__``).

* Chunk 0 is the given clip (16 frames at 256x256 for the ModelScope variant: ``adapt_clip``), kept whole.
* Each later chunk samples 16 frames with DDIM (eta 1) and classifier-free guidance; the CAM sees the last 8
  frames of the previous chunk, the APM the first 8 frames of chunk 0 (``conditioning_type: fixed`` in
  ``inference_long_video.yaml``); only its last 8 frames are new and are appended.
* Frames: L + 8 k for k extension chunks. A length not reachable in steps of 8 is rounded up (``plan_extension``).
* Noise: one generator, seeded once, draws every chunk's start noise and DDIM's eta noise, as the official code
  does (its ``NoiseGenerator`` is configured with ``shared_noise_across_chunks: True`` but, in ``vanilla`` mode,
  is never installed, so each chunk draws fresh noise); ``shared_noise=True`` reuses the first chunk's start noise
  for every chunk instead.
* Memory: the working set is one chunk (two 16-frame UNet passes for CFG, 8 conditioning frames); only the
  output frames grow with the length, written in place into one preallocated tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AnimeVideoInputError
from ..image_ops import fit_image
from ..svd.conditioning import encode_image_embeds
from .keys import SCHEDULER_CONFIG
from .model import NUM_TEXT_TOKENS, StreamingT2VModel

CHUNK_FRAMES = 16  # video_length
NEW_FRAMES = 8  # num_control_input_frames == video_length // 2: frames kept per extension chunk
CAM_FRAMES = 8
APM_FRAMES = 8
DEFAULT_SIZE = 256  # the ModelScope variant's resolution
DEFAULT_STEPS = 50
DEFAULT_CFG = 7.5  # inference_long_video.yaml guidance_scale (the CLI's --image_guidance never reaches predict_step)
DEFAULT_ETA = 1.0
DEFAULT_SEED = 33
DEFAULT_FPS = 8.0  # frame_rate


@dataclass(frozen=True)
class ExtensionPlan:
    input_frames: int  # L, frames of chunk 0 (kept whole)
    chunks: int  # extension chunks k
    requested: int

    @property
    def total_frames(self) -> int:
        return self.input_frames + NEW_FRAMES * self.chunks

    def note(self) -> str:
        made = (f"{self.total_frames} frames = {self.input_frames} given + {self.chunks} x {NEW_FRAMES} new "
                f"({self.chunks} extension chunks of {CHUNK_FRAMES})")
        if self.total_frames != self.requested:
            return (f"asked for {self.requested} frames; StreamingT2V adds {NEW_FRAMES} frames per chunk, "
                    f"so it made {made}.")
        return f"made {made}."


def plan_extension(input_frames: int, target_frames: int) -> ExtensionPlan:
    """Chunk 0 (``input_frames``, at least 8) kept whole, then 8 new frames per chunk up to at least
    ``target_frames`` (rounded up to the next reachable length; never fewer frames than the input)."""
    if input_frames < CAM_FRAMES:
        raise AnimeVideoInputError(
            f"clip: {input_frames} frame(s); StreamingT2V conditions on the last {CAM_FRAMES} frames of the previous "
            f"chunk (and the first {APM_FRAMES} as the anchor), so it needs at least {CAM_FRAMES} (best "
            f"{CHUNK_FRAMES}).")
    if target_frames < 1:
        raise AnimeVideoInputError(f"target_frames: {target_frames}; give at least 1.")
    chunks = max(0, -(-(target_frames - input_frames) // NEW_FRAMES))
    return ExtensionPlan(input_frames=input_frames, chunks=chunks, requested=target_frames)


def adapt_clip(frames: torch.Tensor, size: int = DEFAULT_SIZE, max_frames: int = CHUNK_FRAMES) -> torch.Tensor:
    """Any clip [N, 3, H, W] in 0..1 -> chunk 0 [min(N, 16), 3, size, size]: the first frames, centre-cropped to a
    square and resized (the digest's S6 / A6 decision, as the official ``svd_short_gen`` does)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise AnimeVideoInputError(f"clip: expected frames [N, 3, H, W], got {tuple(frames.shape)}.")
    return fit_image(frames[:max_frames].float(), size, size, "crop").clamp(0, 1)


def zero_pad_tokens(x: torch.Tensor, length: int = NUM_TEXT_TOKENS) -> torch.Tensor:
    if x.shape[1] >= length:
        return x[:, :length]
    return torch.cat([x, x.new_zeros(x.shape[0], length - x.shape[1], x.shape[2])], dim=1)


@torch.inference_mode()
def encode_prompt(model: StreamingT2VModel, tokenizer, prompt: str) -> torch.Tensor:
    """ModelScope's text conditioning: CLIPTextModel(last_hidden_state) of the 77-token padded prompt."""
    ids = tokenizer([prompt], padding="max_length", max_length=NUM_TEXT_TOKENS, truncation=True,
                    return_tensors="pt").input_ids
    return model.text_encoder(ids.to(model.text_encoder.device))[0]


@torch.inference_mode()
def image_tokens(model: StreamingT2VModel, anchor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """APM tokens of the anchor frames [F, 3, H, W] in 0..1 and of zero images (the unconditional branch)."""
    def tokens(frames01):
        emb = encode_image_embeds(model.image_encoder, frames01).squeeze(1)  # [F, D_img]
        return model.resampler(emb.unsqueeze(0).to(model.dtype))

    # zero images in the model's [-1, 1] range are 0.5 grey in 0..1
    return tokens(anchor), tokens(torch.full_like(anchor, 0.5))


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


@torch.inference_mode()
def decode_frames(model: StreamingT2VModel, latents: torch.Tensor) -> torch.Tensor:
    """[1, C, F, h, w] latents -> [F, 3, H, W] in 0..1 (frame by frame, as enable_vae_slicing)."""
    vae = model.vae
    z = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor
    frames = [vae.decode(z[i:i + 1].to(vae.dtype)).sample.float() for i in range(z.shape[0])]
    return (torch.cat(frames) * 0.5 + 0.5).clamp(0, 1)


@torch.inference_mode()
def encode_frames_for_cam(frames01: torch.Tensor, dtype, device) -> torch.Tensor:
    return (frames01 * 2 - 1).to(device=device, dtype=dtype)


@torch.inference_mode()
def sample_chunk(model: StreamingT2VModel, scheduler, latents: torch.Tensor, cam_frames: torch.Tensor,
                 context: torch.Tensor, cfg: float, eta: float, generator: torch.Generator,
                 on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """One chunk's DDIM loop. latents [1, C, 16, h, w]; cam_frames [8, 3, H, W] in [-1, 1];
    context [2, 93, D] (uncond, cond) when cfg > 1 else [1, 93, D]."""
    guided = cfg > 1.0
    cam = torch.cat([cam_frames] * 2) if guided else cam_frames
    for i, t in enumerate(scheduler.timesteps):
        x_in = torch.cat([latents] * 2) if guided else latents
        x_in = scheduler.scale_model_input(x_in, t)
        eps = model.predict_noise(x_in.to(model.dtype), t, context, cam).float()
        if guided:
            uncond, cond = eps.chunk(2)
            eps = uncond + cfg * (cond - uncond)
        # the official pipeline steps on [B*F, C, h, w] (which also orders eta's noise draw)
        b, c, f, h, w = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        eps = eps.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        flat = scheduler.step(eps, t, flat, eta=eta, generator=generator).prev_sample
        latents = flat.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        if on_step is not None:
            on_step(i)
    return latents


@dataclass
class ExtensionResult:
    frames: torch.Tensor  # [M, H, W, 3] in 0..1 (ComfyUI IMAGE)
    plan: ExtensionPlan
    fps: float


@torch.inference_mode()
def extend_clip(model: StreamingT2VModel, clip01: torch.Tensor, prompt_embeds: torch.Tensor | None,
                negative_embeds: torch.Tensor | None, target_frames: int, steps: int = DEFAULT_STEPS,
                cfg: float = DEFAULT_CFG, eta: float = DEFAULT_ETA, seed: int = DEFAULT_SEED,
                shared_noise: bool = False, fps: float = DEFAULT_FPS,
                on_step: Callable[[int, int], None] | None = None,
                check_interrupt: Callable[[], None] | None = None) -> ExtensionResult:
    """clip01: chunk 0 [L, 3, H, W] in 0..1 (see ``adapt_clip``); prompt / negative embeds [1, 77, D] from
    ``encode_prompt``. on_step(chunk, step) after every step; check_interrupt() before every step."""
    if prompt_embeds is None:
        raise AnimeVideoInputError(
            "prompt: StreamingT2V's UNet and CAM are text-conditioned (ModelScope T2V); give a prompt describing "
            "the clip (the negative prompt may be empty).")
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps}; give at least 1.")
    plan = plan_extension(clip01.shape[0], target_frames)
    dev, dt = model.device, model.dtype
    _, _, height, width = clip01.shape
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    out = torch.empty(plan.total_frames, height, width, 3)
    out[:plan.input_frames] = clip01.permute(0, 2, 3, 1)
    if plan.chunks == 0:
        return ExtensionResult(out, plan, fps)

    text = prompt_embeds.to(dev, dt)
    neg = torch.zeros_like(text) if negative_embeds is None else negative_embeds.to(dev, dt)
    img, img_unc = image_tokens(model, clip01[:APM_FRAMES].to(dev))
    cond = torch.cat([zero_pad_tokens(text), img.to(dt)], dim=1)
    uncond = torch.cat([zero_pad_tokens(neg), img_unc.to(dt)], dim=1)
    context = torch.cat([uncond, cond]) if cfg > 1.0 else cond

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    scheduler = ddim_scheduler()
    shape = (1, model.base_model.config.in_channels, CHUNK_FRAMES, height // factor, width // factor)
    first_noise = None
    prev_tail = clip01[-CAM_FRAMES:]
    for k in range(plan.chunks):
        scheduler.set_timesteps(steps)
        if shared_noise and first_noise is not None:
            noise = first_noise
        else:
            noise = torch.randn(shape, generator=gen)
            first_noise = noise
        latents = noise * scheduler.init_noise_sigma

        def step_cb(i, k=k):
            if on_step is not None:
                on_step(k, i)
            if check_interrupt is not None and i + 1 < steps:
                check_interrupt()

        if check_interrupt is not None:
            check_interrupt()
        latents = sample_chunk(model, scheduler, latents.to(dev), encode_frames_for_cam(prev_tail, dt, dev),
                               context, cfg, eta, gen, step_cb)
        chunk = decode_frames(model, latents).cpu()
        start = plan.input_frames + NEW_FRAMES * k
        out[start:start + NEW_FRAMES] = chunk[CHUNK_FRAMES - NEW_FRAMES:].permute(0, 2, 3, 1)
        prev_tail = chunk[-CAM_FRAMES:]
        del latents, chunk
    return ExtensionResult(out, plan, fps)
