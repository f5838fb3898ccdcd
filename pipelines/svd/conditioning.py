"""SVD image conditioning: CLIP image embedding, noise-augmented concat latent and added time ids.

Follows Stability's sgm conditioner and diffusers' pipeline (see the digest, section 3.3):
the CLIP path antialias-resizes to the encoder's input size; the concat latent is the VAE's
*unscaled* posterior mode of the noise-augmented image; time ids are ``[fps - 1, motion, aug]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _gaussian_kernel1d(size: int, sigma: float, dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - size // 2
    k = torch.exp(-x.pow(2.0) / (2 * torch.tensor(sigma, dtype=dtype).pow(2.0)))
    return k / k.sum()


def _blur_axis(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    c = x.shape[1]
    n = kernel.numel()
    lo, hi = (n - 1) // 2, (n - 1) - (n - 1) // 2
    if axis == 3:
        x = F.pad(x, (lo, hi, 0, 0), mode="reflect")
        w = kernel.view(1, 1, 1, n)
    else:
        x = F.pad(x, (0, 0, lo, hi), mode="reflect")
        w = kernel.view(1, 1, n, 1)
    return F.conv2d(x, w.to(x).expand(c, 1, *w.shape[2:]), groups=c)


def resize_antialiased(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaussian pre-blur (sigma from the scale factor, as skimage does) then bicubic resize."""
    h, w = x.shape[-2:]
    sig_y = max((h / size[0] - 1.0) / 2.0, 0.001)
    sig_x = max((w / size[1] - 1.0) / 2.0, 0.001)
    ky, kx = int(max(4.0 * sig_y, 3)), int(max(4.0 * sig_x, 3))
    ky += 1 - ky % 2
    kx += 1 - kx % 2
    x = _blur_axis(x, _gaussian_kernel1d(kx, sig_x, x.dtype), axis=3)
    x = _blur_axis(x, _gaussian_kernel1d(ky, sig_y, x.dtype), axis=2)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def clip_pixel_values(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,3,H,W] in 0..1 -> normalised CLIP input [B,3,size,size] (stretched, no crop, like diffusers)."""
    x = resize_antialiased(images * 2.0 - 1.0, (size, size))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class SVDConditioning:
    """Everything the UNet is conditioned on, for the positive branch; the negative branch is zeros."""

    image_embeds: torch.Tensor  # [B, 1, D]
    image_latents: torch.Tensor  # [B, F, C, h, w], unscaled
    added_time_ids: torch.Tensor  # [B, 3]

    @property
    def num_frames(self) -> int:
        return self.image_latents.shape[1]


@torch.inference_mode()
def encode_image_embeds(image_encoder, images: torch.Tensor) -> torch.Tensor:
    dtype = next(image_encoder.parameters()).dtype
    device = next(image_encoder.parameters()).device
    size = image_encoder.config.image_size
    pixels = clip_pixel_values(images.to(device=device, dtype=torch.float32), size)
    return image_encoder(pixels.to(dtype)).image_embeds.unsqueeze(1)


@torch.inference_mode()
def encode_concat_latent(vae, images: torch.Tensor, aug_noise: torch.Tensor, augmentation_level: float):
    """VAE posterior mode of the noise-augmented image in [-1,1]; *not* multiplied by the scaling factor."""
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    x = images.to(device=device, dtype=torch.float32) * 2.0 - 1.0
    x = x + augmentation_level * aug_noise.to(device=device, dtype=torch.float32)
    return vae.encode(x.to(dtype)).latent_dist.mode()


def added_time_ids(fps: float, motion_bucket_id: float, augmentation_level: float, batch: int, dtype, device):
    # SVD was conditioned on fps - 1 (Stability's and diffusers' convention); `fps` is the real frame rate.
    ids = torch.tensor([[fps - 1, motion_bucket_id, augmentation_level]], dtype=dtype, device=device)
    return ids.repeat(batch, 1)


def build_conditioning(model, images: torch.Tensor, num_frames: int, fps: float, motion_bucket_id: float,
                       augmentation_level: float, aug_noise: torch.Tensor) -> SVDConditioning:
    """images: [B,3,H,W] in 0..1 at the output size."""
    embeds = encode_image_embeds(model.image_encoder, images)
    latent = encode_concat_latent(model.vae, images, aug_noise, augmentation_level)
    latents = latent.to(model.dtype).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    ids = added_time_ids(fps, motion_bucket_id, augmentation_level, images.shape[0], embeds.dtype, embeds.device)
    return SVDConditioning(image_embeds=embeds, image_latents=latents, added_time_ids=ids)


def latent_size(height: int, width: int, factor: int) -> tuple[int, int]:
    return math.ceil(height / factor), math.ceil(width / factor)
