"""Tiny random-weight upscalers in the released on-disk formats, under the released file names.

- ``AnimeSR_v2.pth``: a raw state dict (``torch.save(model.state_dict())``), as TencentARC released it;
- ``realesr-animevideov3.pth``: SRVGGNetCompact keys ``body.N.*`` wrapped in ``{"params": ...}``;
- ``RealESRGAN_x4plus_anime_6B.pth``: RRDBNet keys in BasicSR's names wrapped in ``{"params_ema": ...}``.

Widths and depths shrink, the rules stay: x4 everywhere, AnimeSR's three non-increasing block counts, and the
RRDB growth width 32 (spandrel's ESRGAN loader assumes it). The state-dict builders take ``device="meta"`` to
give the real-size layouts without allocating them (tests count the released parameter numbers that way).
"""
from __future__ import annotations

import os

import torch

from .animesr import MSRSWVSR

ANIMESR_FILE = "upscale_models/AnimeSR_v2.pth"
COMPACT_FILE = "upscale_models/realesr-animevideov3.pth"
RRDB_FILE = "upscale_models/RealESRGAN_x4plus_anime_6B.pth"
TINY_FILES = (ANIMESR_FILE, COMPACT_FILE, RRDB_FILE)

TINY_ANIMESR = dict(num_feat=8, num_block=(2, 1, 1), netscale=4)
TINY_COMPACT = dict(num_feat=8, num_conv=2, scale=4)
TINY_RRDB = dict(num_feat=16, num_block=1, num_grow_ch=32, scale=4)

# The released sizes, for shape-only checks.
REAL_ANIMESR = dict(num_feat=64, num_block=(5, 3, 2), netscale=4)
REAL_COMPACT = dict(num_feat=64, num_conv=16, scale=4)
REAL_RRDB = dict(num_feat=64, num_block=6, num_grow_ch=32, scale=4)


def _conv(sd: dict, name: str, cin: int, cout: int, gen, device, gain: float = 1.0, k: int = 3):
    """Uniform +-gain/sqrt(fan_in) weights (PyTorch's default conv scale) and small biases."""
    if device == "meta":
        sd[f"{name}.weight"] = torch.empty((cout, cin, k, k), device="meta")
        sd[f"{name}.bias"] = torch.empty((cout,), device="meta")
        return
    bound = gain / (cin * k * k) ** 0.5
    sd[f"{name}.weight"] = (torch.rand((cout, cin, k, k), generator=gen) * 2 - 1) * bound
    sd[f"{name}.bias"] = (torch.rand((cout,), generator=gen) * 2 - 1) * bound * 0.1


def compact_state_dict(num_feat=8, num_conv=2, scale=4, seed=0, device="cpu") -> dict[str, torch.Tensor]:
    """SRVGGNetCompact (Real-ESRGAN's animevideo models): conv, PReLU, num_conv x (conv, PReLU), conv to 3*s*s."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "body.0", 3, num_feat, gen, device)
    idx = 1
    for _ in range(num_conv + 1):
        sd[f"body.{idx}.weight"] = (torch.empty((num_feat,), device="meta") if device == "meta"
                                    else torch.full((num_feat,), 0.25))  # PReLU slopes (their init value)
        idx += 1
        if idx < 2 * num_conv + 2:
            _conv(sd, f"body.{idx}", num_feat, num_feat, gen, device)
            idx += 1
    _conv(sd, f"body.{idx}", num_feat, 3 * scale * scale, gen, device, gain=0.1)
    return sd


def rrdb_state_dict(num_feat=16, num_block=1, num_grow_ch=32, scale=4, seed=0, device="cpu") -> dict[str, torch.Tensor]:
    """RRDBNet in BasicSR's names (conv_first, body.N.rdbK.convJ, conv_body, conv_upK, conv_hr, conv_last)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv_first", 3, num_feat, gen, device)
    for b in range(num_block):
        for r in (1, 2, 3):
            for j in range(1, 6):
                cin = num_feat + (j - 1) * num_grow_ch
                cout = num_grow_ch if j < 5 else num_feat
                _conv(sd, f"body.{b}.rdb{r}.conv{j}", cin, cout, gen, device, gain=0.5)
    _conv(sd, "conv_body", num_feat, num_feat, gen, device)
    for u in range({4: 2, 2: 1, 1: 0}[scale]):
        _conv(sd, f"conv_up{u + 1}", num_feat, num_feat, gen, device)
    _conv(sd, "conv_hr", num_feat, num_feat, gen, device)
    _conv(sd, "conv_last", num_feat, 3, gen, device)
    return sd


def build_tiny_animesr(seed=0, **overrides) -> MSRSWVSR:
    """Our MSRSWVSR with PyTorch's default init, the last fusion conv scaled down so SR stays near the bilinear
    enlargement (outputs mostly inside 0..1, which keeps comparisons meaningful after clamping)."""
    cfg = dict(TINY_ANIMESR, **overrides)
    torch.manual_seed(seed)  # nn.Conv2d's init draws from the global generator
    model = MSRSWVSR(**cfg)
    with torch.no_grad():
        last = model.recurrent_cell.fusion[2]
        last.weight.mul_(0.1)
        last.bias.mul_(0.1)
    return model.eval().requires_grad_(False)


def _save(path: str, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_tiny_upscalers(models_dir: str, seed: int = 0) -> list[str]:
    """Write the three tiny upscalers under ``models_dir/upscale_models/``; returns the relative paths written."""
    sd = {k: v.clone().contiguous() for k, v in build_tiny_animesr(seed).state_dict().items()}
    _save(os.path.join(models_dir, ANIMESR_FILE), sd)  # raw state dict, as released
    _save(os.path.join(models_dir, COMPACT_FILE), {"params": compact_state_dict(**TINY_COMPACT, seed=seed + 1)})
    _save(os.path.join(models_dir, RRDB_FILE), {"params_ema": rrdb_state_dict(**TINY_RRDB, seed=seed + 2)})
    return list(TINY_FILES)
