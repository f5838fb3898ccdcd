"""Motion-mask precision: how much of a clip's motion stays inside the region allowed to move.

AniSora (digest A4/A5.4) reports "motion-mask precision" for localized animation (0.9604 vs 0.61 for
AnimateAnything) but its formula is not in the paper (digest A6.6). This is **our reconstruction**, not
comparable to the paper's numbers verbatim:

    precision = sum_t sum_px [motion_t > tau  and  M_t] / sum_t sum_px [motion_t > tau]

over consecutive frame pairs t (pooled over the clip, so pairs without motion do not divide by zero),
where M_t = 1 where the mask allows motion (mask >= 0.5, the union of the two frames' masks for a mask
video) and motion_t is a per-pixel motion magnitude:

- default, weight-free: the frame difference ``mean_rgb |f_{t+1} - f_t|`` in 0..1, tau = 0.02 (~5/255).
  It measures change rather than displacement: the flat interior of a moving anime cel may not change,
  and only its edges count, which is fine for a precision (a ratio of changed pixels);
- or any optical flow the caller has (A6.6's RAFT choice): :func:`flow_magnitude` gives |flow| in pixels
  at a 256-px short side, to compare with tau = 1 px as the digest recommends.

``energy_share`` is the threshold-free variant: sum(motion * M) / sum(motion).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError

DIFF_THRESHOLD = 0.02
FLOW_THRESHOLD_PX = 1.0
FLOW_SHORT_SIDE = 256


@dataclass(frozen=True)
class MotionMaskPrecision:
    precision: float  # pooled over pairs; nan when nothing moved at all
    energy_share: float  # sum(motion * M) / sum(motion); nan when nothing moved
    per_pair: tuple[float, ...]  # precision of each consecutive pair (nan for a pair without motion)
    moving_fraction: float  # share of pixels over the threshold, over all pairs
    mask_fraction: float  # share of pixels the mask allows to move (the precision of motion spread uniformly)
    threshold: float
    method: str  # "frame difference" or "flow"

    def describe(self) -> str:
        return (f"motion-mask precision {self.precision:.4f} ({self.method}, threshold {self.threshold:g}; "
                f"energy share {self.energy_share:.4f}; {self.moving_fraction * 100:.2f}% of pixels moving; "
                f"mask allows {self.mask_fraction * 100:.1f}%)")


def frame_difference(frames: torch.Tensor) -> torch.Tensor:
    """IMAGE [N,H,W,C] 0..1 -> [N-1,H,W]: mean over channels of |f_{t+1} - f_t|."""
    _check_frames(frames)
    x = frames.float()
    return (x[1:] - x[:-1]).abs().mean(dim=-1)


def flow_magnitude(flow: torch.Tensor, short_side: int | None = None) -> torch.Tensor:
    """Flow [N-1,H,W,2] or [N-1,2,H,W] in pixels -> |flow| [N-1,H,W] rescaled to a 256-px short side
    (digest A6.6), so the 1-px threshold means the same at any resolution."""
    if flow.ndim != 4 or 2 not in (flow.shape[1], flow.shape[-1]):
        raise AnimeVideoInputError(f"flow: expected [N-1,H,W,2] or [N-1,2,H,W], got {tuple(flow.shape)}.")
    f = flow.float()
    if f.shape[-1] != 2:
        f = f.permute(0, 2, 3, 1)
    mag = f.pow(2).sum(-1).sqrt()
    short = short_side or min(mag.shape[-2:])
    return mag * (FLOW_SHORT_SIDE / short)


def precision_from_motion(motion: torch.Tensor, mask: torch.Tensor, threshold: float,
                          method: str = "custom") -> MotionMaskPrecision:
    """motion: [N-1,H,W] per-pixel magnitude between consecutive frames; mask: [H,W], [1,H,W] or [N,H,W]
    (1 = may move), resized (bilinear) to the motion's size when it differs."""
    if motion.ndim != 3:
        raise AnimeVideoInputError(f"motion: expected [pairs,H,W], got {tuple(motion.shape)}.")
    pairs, h, w = motion.shape
    allowed = pair_masks(mask, pairs, h, w)
    moving = motion > threshold
    inside = moving & allowed
    total = int(moving.sum())
    precision = int(inside.sum()) / total if total else math.nan
    per_pair = tuple((int(inside[t].sum()) / int(moving[t].sum())) if int(moving[t].sum()) else math.nan
                     for t in range(pairs))
    energy = float(motion.sum())
    energy_share = float((motion * allowed).sum()) / energy if energy > 0 else math.nan
    return MotionMaskPrecision(precision, energy_share, per_pair, total / moving.numel(),
                               float(allowed.float().mean()), float(threshold), method)


def motion_mask_precision(frames: torch.Tensor, mask: torch.Tensor, threshold: float = DIFF_THRESHOLD,
                          flow: torch.Tensor | None = None) -> MotionMaskPrecision:
    """Precision of a clip (IMAGE [N,H,W,C], N >= 2) against its motion mask, by frame difference, or by
    ``flow`` (pixels, see :func:`flow_magnitude`; pass ``threshold=FLOW_THRESHOLD_PX`` then)."""
    if flow is not None:
        _check_frames(frames)
        return precision_from_motion(flow_magnitude(flow), mask, threshold, "flow")
    return precision_from_motion(frame_difference(frames), mask, threshold, "frame difference")


def pair_masks(mask: torch.Tensor, pairs: int, h: int, w: int) -> torch.Tensor:
    """[pairs,H,W] bool: where motion is allowed between frames t and t+1."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise AnimeVideoInputError(f"mask: expected a MASK [N,H,W] or [H,W], got {shape}.")
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    m = m >= 0.5
    if m.shape[0] == 1:
        return m.expand(pairs, -1, -1)
    if m.shape[0] != pairs + 1:
        raise AnimeVideoInputError(
            f"mask: a mask video needs one mask per frame ({pairs + 1}), got {m.shape[0]}; or pass one mask.")
    return m[1:] | m[:-1]


def _check_frames(frames: torch.Tensor):
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AnimeVideoInputError(f"frames: expected an IMAGE [N,H,W,C], got {shape}.")
    if frames.shape[0] < 2:
        raise AnimeVideoInputError(f"frames: motion needs at least 2 frames, got {frames.shape[0]}.")
