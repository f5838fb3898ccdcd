"""PSNR and SSIM between generated frames and gold frames, on pixel values in [0, 255].

Protocol (digest B13: the GANime thesis converted [-1, 1] to [0, 255] with a bug, so its SSIM/PSNR tables are
"as published (buggy conversion)" and not reproduced; LVCD reports both on [0, 1] frames, which gives the same
SSIM and the same PSNR as [0, 255] because both are scale-free once the data range matches):

- frames are IMAGE tensors [N, H, W, C] in 0..1, scaled to 0..255 (float, not quantised);
- PSNR per frame = 10 log10(255^2 / MSE) over all pixels and channels, then the mean over frames
  (infinite for identical frames, reported as such);
- SSIM (Wang et al. 2004) per frame: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  L = 255, "valid" filtering (no padding, as ``tf.image.ssim`` does), averaged over positions and channels,
  then the mean over frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def check_pair(generated: torch.Tensor, gold: torch.Tensor, names=("generated", "gold")) -> None:
    """Both IMAGE [N, H, W, C] with the same shape and finite values."""
    for t, name in zip((generated, gold), names):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] < 1 or t.shape[-1] not in (1, 3):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise AnimeVideoInputError(f"{name}: expected an IMAGE [frames, H, W, 3] with at least one frame, "
                                       f"got {shape}.")
        if not torch.isfinite(t).all():
            raise AnimeVideoInputError(f"{name}: the frames hold NaN or infinite values.")
    if generated.shape != gold.shape:
        raise AnimeVideoInputError(
            f"{names[0]} {tuple(generated.shape)} and {names[1]} {tuple(gold.shape)}: frame-by-frame metrics need "
            "the same number of frames, size and channels (the metrics node resizes gold to the generated size).")


def psnr_per_frame(generated: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """[N] float64 PSNR in dB on [0, 255]; inf where a frame is identical."""
    check_pair(generated, gold)
    diff = (generated.double() - gold.double()) * DATA_RANGE
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(DATA_RANGE ** 2 / mse)  # mse 0 -> inf


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """[size] float64, normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_per_frame(generated: torch.Tensor, gold: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """[N] float64 SSIM on [0, 255]; ``chunk`` frames are filtered at once (bounds memory, same result)."""
    check_pair(generated, gold)
    h, w = generated.shape[1:3]
    if min(h, w) < SSIM_WINDOW:
        raise AnimeVideoInputError(f"generated: SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels "
                                   f"(its Gaussian window), got {w}x{h}.")
    out = []
    for start in range(0, generated.shape[0], max(1, int(chunk))):
        a = generated[start:start + chunk].double().permute(0, 3, 1, 2) * DATA_RANGE
        b = gold[start:start + chunk].double().permute(0, 3, 1, 2) * DATA_RANGE
        out.append(_ssim_map(a, b).mean(dim=(1, 2, 3)))
    return torch.cat(out)


def _ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c = a.shape[1]
    g = gaussian_window().to(a.device)
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(x):  # separable Gaussian, valid positions only, per channel
        return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
