"""A tiny random-weight AnimeInterp in the released checkpoint layout, for tests and CPU demos.

Same architecture and code as the released model, smaller widths; the correlation pyramid (4
levels, radius 4) and the x8 flow upsampling stay as released, so frames still need >= 128 px.
Written as ``torch.save({'model_state_dict': {'module.' + key: tensor}})``, the layout of
``anime_interp_full.ckpt`` (saved from ``nn.DataParallel``).
"""
from __future__ import annotations

import os

import torch

from .animeinterp import AnimeInterp, AnimeInterpConfig

FILE = "interpolation/anime_interp_full.ckpt"

TINY_CONFIG = AnimeInterpConfig(
    feat_widths=(8, 8, 16),
    grid_widths=(8, 8, 16),
    encoder_widths=(8, 8, 16),
    hidden_dim=8,
    context_dim=8,
    motion_corr_widths=(16, 8),
    motion_flow_widths=(8, 8),
    motion_dim=16,
    flow_head_dim=16,
    mask_dim=16,
    attention_dim=8,
)


def build_tiny_interpolator(seed: int = 0, cfg: AnimeInterpConfig = TINY_CONFIG) -> AnimeInterp:
    """Random weights; the flow head is scaled down so flows stay a few pixels, as trained ones do."""
    gen = torch.Generator().manual_seed(seed)
    model = AnimeInterp(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            elif p.ndim == 1 and "prelu" not in name and p.numel() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
        model.flownet.update_block.flow_head.conv2.weight.mul_(0.2)
    return model.eval().requires_grad_(False)


def official_layout(model: AnimeInterp) -> dict:
    return {"model_state_dict": {"module." + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}}


def write_tiny_interpolator(models_dir: str, seed: int = 0) -> list[str]:
    """Write ``models_dir/interpolation/anime_interp_full.ckpt``; returns the relative paths written."""
    path = os.path.join(models_dir, FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(official_layout(build_tiny_interpolator(seed)), tmp)
    os.replace(tmp, path)
    return [FILE]
