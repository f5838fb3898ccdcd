"""Running a clip through AnimeInterp, pair by pair, with bounded memory.

The output IMAGE batch is preallocated once (on the frames' device, normally the CPU). The model
device only ever holds the current pair: the two padded frames, their features and the pair's
flows. Each frame is encoded once and reused by the next pair; the flows of a pair are computed
once for all its in-between times. Frames are padded (edge-replicated, right and bottom) to the
model's multiple of 8 and to at least 128 px, where AnimeInterp's flow pyramid stops producing NaN,
and cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import memory
from .animeinterp import AnimeInterp, AnimeInterpConfig, FrameState
from .timing import OutFrame


@dataclass
class RunStats:
    interpolated: int = 0
    copied: int = 0
    pairs: int = 0
    encoded: int = 0
    padded_from: tuple[int, int] = (0, 0)
    padded_to: tuple[int, int] = (0, 0)


def padded_size(h: int, w: int, multiple: int, minimum: int) -> tuple[int, int]:
    up = lambda x: max(minimum, -(-x // multiple) * multiple)  # noqa: E731
    return up(h), up(w)


def working_bytes(cfg: AnimeInterpConfig, h: int, w: int, dtype_bytes: int = 4) -> int:
    """Rough peak device memory of one pair at padded size h x w (for freeing room before a run)."""
    hw = h * w
    cells = hw // 64  # the flow works at 1/8
    corr = 2 * cells * cells * 4 * 4 // 3  # both directions, float32, with the pooled levels
    f1, f2, f3 = cfg.feat_widths
    frame = hw * (3 + f1) + hw // 4 * f2 + hw // 16 * f3 + cells * cfg.feature_dim
    synth = 2 * hw * (4 + f1) * 3 + hw * cfg.grid_widths[0] * 8  # splats and GridNet activations
    return corr + (2 * frame + synth) * dtype_bytes


def pad_frame(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[H, W, 3] IMAGE frame -> [1, 3, h, w] with the right and bottom edges replicated."""
    x = frame.permute(2, 0, 1)[None]
    ph, pw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x.contiguous()


def interpolate_clip(
    model: AnimeInterp,
    frames: torch.Tensor,
    plan: list[OutFrame],
    *,
    device: torch.device | None = None,
    iters: int | None = None,
    on_frame: Callable[..., None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, RunStats]:
    """Make every frame of ``plan`` from the IMAGE clip ``frames`` [N, H, W, 3] 0..1.

    ``on_frame(done, total)`` is called after each copied output frame and ``on_frame(done, total,
    frame)`` (the new [H, W, 3] frame) after each interpolated one; ``check_interrupt()`` runs before
    each model call (it raises to stop). Returns the [len(plan), H, W, 3] float32 clip and run statistics.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {tuple(frames.shape)}")
    device = device or model.device
    n, h, w, _ = frames.shape
    size = padded_size(h, w, model.size_multiple, model.min_size)
    total = len(plan)
    if out is None:
        out = memory.allocate((total, h, w, 3), torch.float32, frames.device,
                              f"the interpolated clip ({total} frames of {w}x{h})",
                              "Interpolate fewer frames at a time, or to a lower frame rate.")
    stats = RunStats(padded_from=(h, w), padded_to=size)
    cache: dict[int, FrameState] = {}
    flows_for: tuple[int, int] | None = None
    flows = None

    def state(i: int) -> FrameState:
        if i not in cache:
            x = pad_frame(frames[i].to(device=device, dtype=torch.float32), size)
            cache[i] = model.encode_frame(x)
            stats.encoded += 1
        return cache[i]

    with torch.inference_mode():
        for j, item in enumerate(plan):
            if item.is_copy:
                out[j].copy_(frames[item.a])
                stats.copied += 1
            else:
                if check_interrupt is not None:
                    check_interrupt()
                pair = (item.a, item.b)
                if pair != flows_for:
                    for k in [k for k in cache if k not in pair]:
                        del cache[k]  # only the current pair stays on the device
                    a, b = state(item.a), state(item.b)
                    flows = model.pair_flows(a, b, iters)
                    flows_for = pair
                    stats.pairs += 1
                a, b = cache[item.a], cache[item.b]
                frame = model.synthesize(a, b, flows[0], flows[1], item.t)
                out[j].copy_(frame[0, :, :h, :w].permute(1, 2, 0).clamp_(0, 1).to(out.dtype))
                stats.interpolated += 1
                if on_frame is not None:
                    on_frame(j + 1, total, out[j])
                continue
            if on_frame is not None:
                on_frame(j + 1, total)
    return out, stats


def plain_loop(model: AnimeInterp, frames: torch.Tensor, plan: list[OutFrame], device=None,
               iters: int | None = None) -> torch.Tensor:
    """The same plan, one released-style ``model(I1, I2, None, None, t)`` call per in-between frame.

    For benchmarks and checks: everything (features, both flows) is recomputed for every frame.
    """
    device = device or model.device
    n, h, w, _ = frames.shape
    size = padded_size(h, w, model.size_multiple, model.min_size)
    out = torch.empty((len(plan), h, w, 3), dtype=torch.float32, device=frames.device)
    with torch.inference_mode():
        for j, item in enumerate(plan):
            if item.is_copy:
                out[j].copy_(frames[item.a])
                continue
            i1 = pad_frame(frames[item.a].to(device), size)
            i2 = pad_frame(frames[item.b].to(device), size)
            it = model(i1, i2, None, None, item.t, iters=iters)[0]
            out[j].copy_(it[0, :, :h, :w].permute(1, 2, 0).clamp(0, 1).float())
    return out
