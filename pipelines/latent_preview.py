"""Cheap per-step previews: a linear latent -> RGB map fitted to the model's own VAE.

A VAE's latent channels are close to an affine function of local colour, so a least-squares fit on a few
probe pictures (solid colours and gradients, encoded once) gives a usable preview for any latent layout
without shipping per-model tables. The fit costs one small VAE pass; a preview is one matrix product.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PROBE_SIZE = 64


def probe_pictures(size: int = PROBE_SIZE) -> torch.Tensor:
    """[N, 3, size, size] in 0..1: the 8 corners of the RGB cube, mid grey and 4 gradients."""
    corners = torch.tensor([[r, g, b] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)] + [[0.5] * 3])
    solid = corners[:, :, None, None].expand(-1, -1, size, size)
    ramp = torch.linspace(0, 1, size)
    gx, gy = ramp[None, :].expand(size, size), ramp[:, None].expand(size, size)
    grads = torch.stack([torch.stack([gx, gy, 1 - gx]), torch.stack([gy, 1 - gx, gx]),
                         torch.stack([1 - gy, gx, gy]), torch.stack([gx * gy, 1 - gy, gx])])
    return torch.cat([solid, grads]).float()


def fit_latent_to_rgb(encode: Callable[[torch.Tensor], torch.Tensor], size: int = PROBE_SIZE) -> torch.Tensor:
    """``encode``: pictures [N, 3, H, W] in 0..1 -> latents [N, C, h, w] (the space the sampler works in).
    Returns [C + 1, 3]: weights and, in the last row, the bias of RGB (0..1) ~ latent."""
    pics = probe_pictures(size)
    lat = encode(pics).float().cpu()
    n, c, h, w = lat.shape
    rgb = F.adaptive_avg_pool2d(pics, (h, w))  # the colour each latent pixel stands for
    x = torch.cat([lat.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(n * h * w, 1)], dim=1).double()
    y = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double()
    ridge = 1e-4 * torch.eye(c + 1, dtype=torch.float64)  # keep it well posed for channels that barely vary
    return torch.linalg.solve(x.T @ x + ridge, x.T @ y).float()


def preview_rgb(latent: torch.Tensor, projection: torch.Tensor, max_side: int = 256) -> torch.Tensor:
    """[C, h, w] latent -> [h', w', 3] uint8 (upscaled by nearest neighbour to at most ``max_side``)."""
    c = latent.shape[0]
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), projection[:c]) + projection[c]
    img = rgb.clamp(0, 1).permute(2, 0, 1)[None]
    scale = max(1, max_side // max(img.shape[-2:]))
    if scale > 1:
        img = F.interpolate(img, scale_factor=scale, mode="nearest")
    return img[0].permute(1, 2, 0).mul(255).round().to(torch.uint8)
