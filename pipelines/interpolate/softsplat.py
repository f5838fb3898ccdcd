"""Forward splatting ("summation" softmax splatting) in plain torch: no cupy, any device.

Every source pixel ``(x, y)`` is pushed to ``(x + u, y + v)`` and its value is added to the four
surrounding target pixels with bilinear weights; corners that fall outside the frame are dropped.
That is the "summation" mode AnimeInterp was trained with. AnimeInterp then divides each target
pixel by the splatted weight of a ones-image wherever that weight is positive ("normalisation"),
which :func:`splat_normalized` does in the same pass by carrying a ones channel along.

The scatter is one ``index_add_`` per corner; out-of-frame corners get weight 0 and a clamped
index instead of being filtered out, so the work has a fixed shape (no host sync on a GPU).
Accumulation is in float32 at least (float64 stays float64), whatever the input dtype.
"""
from __future__ import annotations

import torch


def _accum_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def forward_splat(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Summation splat: ``values`` [N, C, H, W] moved by ``flow`` [N, 2, H, W] (x, y in pixels).

    Returns the summed contributions [N, C, H, W] in the input dtype.
    """
    if values.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"forward_splat: expected values [N,C,H,W] and flow [N,2,H,W], got "
                         f"{tuple(values.shape)} and {tuple(flow.shape)}")
    n, c, h, w = values.shape
    if flow.shape[0] != n or flow.shape[2:] != values.shape[2:]:
        raise ValueError(f"forward_splat: flow {tuple(flow.shape)} does not match values {tuple(values.shape)}")
    acc = _accum_dtype(values.dtype)
    dev = values.device
    flow = flow.to(acc)

    xs = torch.arange(w, device=dev, dtype=acc).view(1, 1, w) + flow[:, 0]  # [N, H, W] target x
    ys = torch.arange(h, device=dev, dtype=acc).view(1, h, 1) + flow[:, 1]
    # Anything landing beyond one pixel outside the frame is dropped anyway: clamping there (and
    # sending NaN/inf out of the frame) keeps the integer conversion below well defined.
    xs = torch.nan_to_num(xs, nan=-2.0, posinf=w + 1.0, neginf=-2.0).clamp(-2.0, w + 1.0)
    ys = torch.nan_to_num(ys, nan=-2.0, posinf=h + 1.0, neginf=-2.0).clamp(-2.0, h + 1.0)
    x0 = torch.floor(xs)
    y0 = torch.floor(ys)
    fx = xs - x0  # weight of the right column
    fy = ys - y0  # weight of the bottom row
    x0 = x0.long()
    y0 = y0.long()

    src = values.to(acc).permute(0, 2, 3, 1).reshape(n * h * w, c)  # rows = source pixels
    base = (torch.arange(n, device=dev) * (h * w)).view(n, 1, 1)
    out = torch.zeros(n * h * w, c, device=dev, dtype=acc)
    # One corner at a time (NW, NE, SW, SE) keeps the working memory at one copy of the values.
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = x0 + dx, y0 + dy
        inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        index = (base + cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).reshape(-1)
        out.index_add_(0, index, src * (weight * inside).reshape(-1, 1))
    return out.view(n, h, w, c).permute(0, 3, 1, 2).to(values.dtype)


def splat_normalized(values: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summation splat divided by the splatted ones-image where that is positive (AnimeInterp's rule).

    Returns ``(normalised values [N, C, H, W], weight [N, 1, H, W])``; pixels nothing lands on are 0.
    """
    ones = torch.ones_like(values[:, :1])
    summed = forward_splat(torch.cat([values, ones], dim=1), flow)
    total, weight = summed[:, :-1], summed[:, -1:]
    positive = weight > 0
    return torch.where(positive, total / torch.where(positive, weight, torch.ones_like(weight)), total), weight
