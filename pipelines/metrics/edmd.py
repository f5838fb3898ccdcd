"""EDMD, LVCD's sketch-alignment metric: the RMSE between two Euclidean distance maps.

LVCD (digest, metrics 3 and B8.12): re-extract lineart from the generated frames with the same extractor that
made the input sketches, compute each line map's Euclidean distance map (per pixel, the distance to the nearest
line pixel; Danielsson 1980), and take the RMSE between the generated frame's map and the reference sketch's map:
"the average pixel shift" of the lines. Line maps are LVCD hints (white lines on black, 0..1) binarised at 0.5;
LVCD scores at 256x256 (the caller resizes).

The distance transform is exact (not a chamfer approximation): a column pass gives each pixel's vertical
distance to the nearest line pixel in its column, then a row pass takes min_k (g_k^2 + (j - k)^2) over the
row. Tests compare it with ``scipy.ndimage.distance_transform_edt``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AnimeVideoInputError

LINE_THRESHOLD = 0.5


def distance_map(lines: torch.Tensor, row_chunk: int = 16) -> torch.Tensor:
    """lines: bool [N, H, W] (True = line pixel) -> float64 [N, H, W] Euclidean distance to the nearest line pixel
    (0 on lines; inf in a frame without any line pixel)."""
    if lines.ndim != 3:
        raise AnimeVideoInputError(f"lines: expected [frames, H, W], got {tuple(lines.shape)}.")
    n, h, w = lines.shape
    big = float(h + w + 1)
    rows = torch.arange(h, dtype=torch.float64, device=lines.device).view(1, h, 1).expand(n, h, w)
    # nearest line pixel above (or at) each pixel, and below (or at), per column
    above = torch.where(lines, rows, torch.full_like(rows, -big)).cummax(dim=1).values
    below = torch.where(lines, rows, torch.full_like(rows, 2 * big)).flip(1).cummin(dim=1).values.flip(1)
    g = torch.minimum(rows - above, below - rows)  # > h where the column has no line
    g2 = g ** 2
    cols = torch.arange(w, dtype=torch.float64, device=lines.device)
    shift2 = (cols.view(-1, 1) - cols.view(1, -1)) ** 2  # [j, k]
    out = torch.empty(n, h, w, dtype=torch.float64, device=lines.device)
    for i in range(n):
        for start in range(0, h, row_chunk):  # [rows, j, k]: memory bounded by the chunk
            block = g2[i, start:start + row_chunk, None, :] + shift2
            out[i, start:start + row_chunk] = block.min(dim=-1).values
    out = out.sqrt()
    out[~lines.flatten(1).any(dim=1)] = math.inf
    return out


def binarize(hints: torch.Tensor, threshold: float = LINE_THRESHOLD) -> torch.Tensor:
    """LVCD hints IMAGE [N, H, W, C] (white lines on black) or [N, H, W] -> bool line masks [N, H, W]."""
    x = hints.float()
    if x.ndim == 4:
        x = x.mean(dim=-1)
    if x.ndim != 3:
        raise AnimeVideoInputError(f"lineart: expected [frames, H, W, 3] hints, got {tuple(hints.shape)}.")
    return x > threshold


@dataclass(frozen=True)
class EDMDResult:
    value: float  # mean over frames that have lines in both maps
    per_frame: tuple[float, ...]  # nan where one map has no line at all
    frames_without_lines: int


def edmd(generated_lines: torch.Tensor, reference_lines: torch.Tensor) -> EDMDResult:
    """RMSE between the distance maps of two bool line-mask stacks [N, H, W] of the same shape."""
    if generated_lines.shape != reference_lines.shape:
        raise AnimeVideoInputError(f"lineart: generated {tuple(generated_lines.shape)} and reference "
                                   f"{tuple(reference_lines.shape)} line maps differ in shape.")
    da, db = distance_map(generated_lines), distance_map(reference_lines)
    per = []
    missing = 0
    for a, b in zip(da, db):
        if math.isinf(float(a.max())) or math.isinf(float(b.max())):
            missing += 1
            per.append(math.nan)
        else:
            per.append(float((a - b).pow(2).mean().sqrt()))
    valid = [p for p in per if not math.isnan(p)]
    return EDMDResult(sum(valid) / len(valid) if valid else math.nan, tuple(per), missing)
