"""SVD image-to-video as a short sequence of named steps (check -> noise -> condition -> sample -> decode)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..attention import select_attention_backend
from ..errors import AnimeVideoInputError
from . import conditioning, decode, sampler
from .loader import SVDModel


@dataclass
class SVDRequest:
    num_frames: int = 14
    fps: float = 7.0
    motion_bucket_id: float = 127.0
    augmentation_level: float = 0.02
    steps: int = 25
    min_cfg: float = 1.0
    max_cfg: float = 3.0
    seed: int = 0
    decode_chunk_size: int = 8
    tile_size: int = 0  # latent px; 0 = no spatial tiling
    tile_overlap: int = 8


@dataclass
class SVDResult:
    frames: torch.Tensor  # [F, H, W, 3] float32 0..1
    latents: torch.Tensor  # [B, F, C, h, w] model space (scaled)


@dataclass
class SVDRunHooks:
    denoiser: sampler.Denoiser | None = None
    denoised_hooks: Sequence[sampler.DenoisedHook] = field(default_factory=list)
    on_step: Callable[[sampler.StepState], None] | None = None
    on_decode_chunk: Callable[[int, int], None] | None = None


def size_step(model: SVDModel) -> int:
    """Frame sides must be multiples of the VAE factor (8); the UNet resizes its skips for other sizes."""
    return model.spatial_factor


def check_request(model: SVDModel, images: torch.Tensor, req: SVDRequest):
    step = size_step(model)
    _, _, h, w = images.shape
    for name, v in (("width", w), ("height", h)):
        if v % step or v <= 0:
            lo, hi = max(step, v // step * step), (v // step + 1) * step
            raise AnimeVideoInputError(
                f"{name}: {v} is not a multiple of {step}, this model's size step; use {lo} or {hi}."
            )
    if req.num_frames < 1:
        raise AnimeVideoInputError(f"num_frames: {req.num_frames} is too small; at least 1 frame is needed.")
    if req.steps < 1:
        raise AnimeVideoInputError(f"steps: {req.steps} is too small; at least 1 step is needed.")
    if req.decode_chunk_size < 1:
        raise AnimeVideoInputError(f"decode_chunk_size: {req.decode_chunk_size}; at least 1 is needed.")
    if req.fps <= 0:
        raise AnimeVideoInputError(f"fps: {req.fps}; the frame rate must be positive.")


def draw_noise(model: SVDModel, images: torch.Tensor, num_frames: int, seed: int):
    """Augmentation noise then latent noise from one CPU generator (diffusers' order), reproducible anywhere."""
    gen = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    b, _, h, w = images.shape
    f = model.spatial_factor
    aug = torch.randn(images.shape, generator=gen, dtype=torch.float32)
    noise = torch.randn((b, num_frames, model.latent_channels, h // f, w // f), generator=gen, dtype=torch.float32)
    return aug, noise


def image_to_video(model: SVDModel, images: torch.Tensor, req: SVDRequest, hooks: SVDRunHooks | None = None,
                   noise: torch.Tensor | None = None, aug_noise: torch.Tensor | None = None) -> SVDResult:
    """images: [B,3,H,W] in 0..1, already at the output size."""
    hooks = hooks or SVDRunHooks()
    check_request(model, images, req)
    device = model.device
    drawn_aug, drawn_noise = draw_noise(model, images, req.num_frames, req.seed)
    aug_noise = drawn_aug if aug_noise is None else aug_noise
    noise = drawn_noise if noise is None else noise

    cond = conditioning.build_conditioning(model, images.to(device), req.num_frames, req.fps,
                                           req.motion_bucket_id, req.augmentation_level, aug_noise)
    guidance = sampler.frame_guidance(req.min_cfg, req.max_cfg, req.num_frames, device=device)
    if hooks.denoiser is None:
        select_attention_backend(model.unet, device)
    run = sampler.EDMEulerSampler(
        denoiser=hooks.denoiser or sampler.UNetDenoiser(model.unet),
        denoised_hooks=list(hooks.denoised_hooks),
        callback=hooks.on_step,
    )
    latents = run.sample(cond, noise.to(device), sampler.karras_sigmas(req.steps, device=device),
                         guidance if req.max_cfg > 1.0 else None)

    frames = decode.decode_latents(model.vae, latents.flatten(0, 1), model.vae_scaling_factor, req.decode_chunk_size,
                                   tile_size=req.tile_size, tile_overlap=req.tile_overlap,
                                   on_chunk=hooks.on_decode_chunk)
    return SVDResult(frames=frames, latents=latents)
