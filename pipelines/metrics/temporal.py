"""TC, LVCD's temporal consistency (Eq. 9): warping error of the generated clip relative to the gold clip's own.

    TC = mean_t( ||W(G_t) - G_{t+1}||_2 / ||G_{t+1}||_2 )  /  mean_t( ||W(R_t) - R_{t+1}||_2 / ||R_{t+1}||_2 )

G = generated frames, R = gold (reference) frames, W = backward warping of frame t to t+1 with the optical
flow F_{t+1 -> t} estimated on the **gold** frames (both clips are warped with the same flow, so the ratio
measures how much more the generated clip departs from the gold motion than gold does from its own flow
estimate; 1 = as consistent as gold, lower is better). Digest B8.12: no occlusion mask, L2 norm over the
whole frame, per clip the mean over pairs for G and R separately, then their ratio.

The flow comes from a callable (the pack's AnimeInterp flow network through :func:`animeinterp_flow`, or
any estimator giving pixels), so the maths here is estimator-independent and tested with hand-made flows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from .pixel import check_pair

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (source [B,3,H,W], target) 0..1 -> [B,2,H,W] px


def backward_warp(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """out(p) = frame(p + flow(p)), bilinear, zeros outside. frame [B,C,H,W], flow [B,2,H,W] in pixels (x, y)."""
    b, _, h, w = frame.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True maps -1..1 onto pixel centres 0..w-1, so pixel coordinates convert exactly
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(frame.to(flow.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@dataclass(frozen=True)
class TCResult:
    value: float  # generated warping error / gold warping error
    generated_error: float
    gold_error: float
    pairs: int


def warping_error(frames: torch.Tensor, flows: torch.Tensor) -> float:
    """frames [N,C,H,W], flows [N-1,2,H,W] (F_{t+1 -> t}) -> mean_t ||W(f_t) - f_{t+1}|| / ||f_{t+1}||."""
    warped = backward_warp(frames[:-1], flows)
    nxt = frames[1:].to(warped.dtype)
    num = (warped - nxt).flatten(1).norm(dim=1)
    den = nxt.flatten(1).norm(dim=1)
    ratio = torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))
    return float(ratio.mean())


def temporal_consistency(generated: torch.Tensor, gold: torch.Tensor, flows: torch.Tensor) -> TCResult:
    """generated, gold: IMAGE [N,H,W,C] 0..1 (same shape, N >= 2); flows [N-1,2,H,W]: F_{t+1 -> t} of gold."""
    check_pair(generated, gold)
    n, h, w = generated.shape[:3]
    if n < 2:
        raise AnimeVideoInputError(f"generated: TC needs at least 2 frames, got {n}.")
    if tuple(flows.shape) != (n - 1, 2, h, w):
        raise AnimeVideoInputError(f"flows: expected [{n - 1}, 2, {h}, {w}] (one flow per consecutive gold pair), "
                                   f"got {tuple(flows.shape)}.")
    flows = flows.double()
    g = warping_error(generated.permute(0, 3, 1, 2).double(), flows)
    r = warping_error(gold.permute(0, 3, 1, 2).double(), flows)
    return TCResult(g / r if r > 0 else math.nan, g, r, n - 1)


def gold_flows(gold: torch.Tensor, flow_fn: FlowFn, chunk: int = 4,
               on_chunk: Callable[[int, int], None] | None = None, min_side: int = 0) -> torch.Tensor:
    """F_{t+1 -> t} for each consecutive pair of gold IMAGE [N,H,W,C] -> [N-1,2,H,W] float32 (CPU).

    Frames whose short side is below ``min_side`` (a flow network's smallest input) are enlarged for the
    estimate and the flow is resized back, its vectors scaled with it."""
    from ..interpolate.animeinterp import resize_flow

    x = gold.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if min_side and min(h, w) < min_side:
        scale = min_side / min(h, w)
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False,
                          antialias=True).clamp(0, 1)
    out = []
    pairs = x.shape[0] - 1
    for start in range(0, pairs, chunk):
        stop = min(pairs, start + chunk)
        flow = flow_fn(x[start + 1:stop + 1], x[start:stop]).float().cpu()
        out.append(flow if tuple(flow.shape[-2:]) == (h, w) else resize_flow(flow, (h, w), mode="bilinear"))
        if on_chunk is not None:
            on_chunk(stop, pairs)
    return torch.cat(out) if out else torch.zeros(0, 2, h, w)


def animeinterp_flow(model, iters: int = 12) -> FlowFn:
    """The pack's AnimeInterp flow network (RFR, RAFT-style) as a flow estimator: (source, target) 0..1 ->
    flow source -> target in pixels, at the input size."""
    @torch.no_grad()
    def flow(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dev, dt = model.device, model.dtype
        a = ((source.to(dev) - 0.5) / 0.5).to(dt)
        b = ((target.to(dev) - 0.5) / 0.5).to(dt)
        f, _ = model.flownet(a, b, iters)
        return f.float()

    return flow
