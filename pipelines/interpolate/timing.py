"""Anime-aware timing: duplicate drawings, scene cuts and the re-timing plan.

Anime is often drawn "on twos" or "on threes": each drawing is shown for 2 or 3 frames of a 24 fps
clip. Interpolating between a frame and its own copy gives nothing, and spreading the motion only
over the frame where the drawing changes gives jerky output. So we:

1. group the source frames into **drawings** (runs of near-identical frames). A frame joins the
   current drawing when its *duplicate score* against the drawing's first frame is at most the
   threshold. The score is the largest 4x4-block mean absolute difference of the luma after an area
   downscale to at most 256 px (0..1): codec noise averages out, while a small change (a mouth, an
   eye blink) still moves one block well above it. Comparing with the drawing's first frame, not
   the previous frame, stops a slow drift from chaining into one endless drawing.
2. find **scene cuts** between consecutive frames: the *cut score* is the colour-histogram distance
   (16 bins per RGB channel, half the L1 distance, averaged over channels; 0 = same colours, 1 =
   disjoint). Motion inside a shot barely moves the histogram; a cut usually does.
3. **plan** the output: output frame ``j`` sits at source time ``j * source_fps / target_fps``
   (in source frames); each drawing sits at the time of its first frame. Between two drawings of one
   shot the frame is interpolated at the fraction of the way between them; across a cut, and after
   the last drawing, the earlier drawing is held (copied), never blended. A drawing held much longer
   than the clip's usual cadence (a held pose) is kept still and only the last ``cadence`` frames
   before the next drawing are interpolated, so a pause stays a pause instead of a slow drift.
   The output keeps the clip's duration: ``round(frames * target_fps / source_fps)`` frames.

Everything here is a pure function of the frames or of plain numbers, so it can be tested alone.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import torch
import torch.nn.functional as F

THUMB_SIDE = 256
BLOCK = 4
HIST_BINS = 16
CADENCE_NAMES = {1: "on ones", 2: "on twos", 3: "on threes", 4: "on fours"}


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

def thumbnail(frame: torch.Tensor, side: int = THUMB_SIDE) -> torch.Tensor:
    """[H, W, 3] 0..1 (an IMAGE frame) -> [3, h, w] float32, area-downscaled to at most ``side`` px."""
    x = frame.permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return x[0]


def luma(thumb: torch.Tensor) -> torch.Tensor:
    r, g, b = thumb[0], thumb[1], thumb[2]
    return 0.299 * r + 0.587 * g + 0.114 * b


def duplicate_score(a: torch.Tensor, b: torch.Tensor, block: int = BLOCK) -> float:
    """Largest block-mean absolute luma difference of two thumbnails (0 = identical)."""
    d = (luma(a) - luma(b)).abs()[None, None]
    k = min(block, d.shape[-2], d.shape[-1])
    return float(F.avg_pool2d(d, k, stride=k, ceil_mode=True).max()) if k > 0 else 0.0


def histogram(thumb: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """[3, bins] normalised per-channel histograms."""
    idx = (thumb.clamp(0, 1) * bins).long().clamp_(max=bins - 1).reshape(3, -1)
    hist = torch.zeros(3, bins)
    hist.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
    return hist / idx.shape[1]


def cut_score(hist_a: torch.Tensor, hist_b: torch.Tensor) -> float:
    """0..1: half the L1 distance of the histograms, averaged over the channels."""
    return float((hist_a - hist_b).abs().sum(dim=1).mean() / 2)


# ---------------------------------------------------------------------------------------------
# Clip analysis
# ---------------------------------------------------------------------------------------------

@dataclass
class ClipAnalysis:
    num_frames: int
    starts: list[int]  # first source frame of each drawing, ascending, starts[0] == 0
    cuts: list[int] = field(default_factory=list)  # drawing indices k with a scene cut just before drawing k
    cut_scores: dict[int, float] = field(default_factory=dict)  # source frame -> score, for the detected cuts
    dedup: bool = True
    dup_threshold: float = 0.0
    cut_threshold: float = 1.0

    @property
    def holds(self) -> list[int]:
        ends = self.starts[1:] + [self.num_frames]
        return [e - s for s, e in zip(self.starts, ends)]

    @property
    def cadence(self) -> int:
        return dominant_cadence(self.holds)

    @property
    def duplicates(self) -> int:
        return self.num_frames - len(self.starts)


def iter_frames(frames: torch.Tensor, chunk: int = 16) -> Iterator[torch.Tensor]:
    """One [H, W, 3] frame at a time, moving ``chunk`` frames at a time to the CPU (bounded memory)."""
    for i in range(0, frames.shape[0], chunk):
        block = frames[i:i + chunk].detach().to("cpu", torch.float32)
        yield from block


def analyze_clip(frames: torch.Tensor, dedup: bool = True, dup_threshold: float = 0.02,
                 cut_threshold: float = 0.4) -> ClipAnalysis:
    """Drawings and scene cuts of an IMAGE clip [N, H, W, 3].

    A frame starts a new drawing when dedup is off, when its duplicate score against the current
    drawing's first frame exceeds ``dup_threshold``, or when a cut precedes it. A cut is a cut score
    above ``cut_threshold`` between consecutive frames (1.0 never cuts).
    """
    n = int(frames.shape[0])
    starts, cuts, scores = [], [], {}
    rep = prev_hist = None
    for i, frame in enumerate(iter_frames(frames)):
        thumb = thumbnail(frame)
        hist = histogram(thumb)
        if i == 0:
            starts.append(0)
            rep, prev_hist = thumb, hist
            continue
        cs = cut_score(prev_hist, hist)
        is_cut = cs > cut_threshold
        new_drawing = is_cut or not dedup or duplicate_score(rep, thumb) > dup_threshold
        if new_drawing:
            starts.append(i)
            rep = thumb
            if is_cut:
                cuts.append(len(starts) - 1)
                scores[i] = cs
        prev_hist = hist
    return ClipAnalysis(n, starts, cuts, scores, dedup, dup_threshold, cut_threshold)


def dominant_cadence(holds: list[int]) -> int:
    """The most common hold length (the last drawing's, cut short by the clip's end, is left out)."""
    counted = holds[:-1] if len(holds) > 1 else holds
    if not counted:
        return 1
    counts = Counter(counted)
    best = max(counts.values())
    return min(h for h, c in counts.items() if c == best)


def cadence_name(c: int) -> str:
    return CADENCE_NAMES.get(c, f"each drawing held {c} frames")


# ---------------------------------------------------------------------------------------------
# Re-timing plan
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutFrame:
    """Output frame: a copy of source frame ``a`` (``b is None``), or drawing ``a`` -> ``b`` at ``t``."""

    a: int
    b: int | None = None
    t: float = 0.0

    @property
    def is_copy(self) -> bool:
        return self.b is None


def as_fraction(x) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1_000_000)


def output_count(num_frames: int, source_fps, target_fps) -> int:
    """Frames that keep the clip's duration at the new rate (at least 1)."""
    return max(1, round(num_frames * as_fraction(target_fps) / as_fraction(source_fps)))


def hold_limit(cadence: int) -> int:
    """Holds up to this many frames are interpolated over their whole length."""
    return max(2 * cadence, 3)


def plan_retiming(analysis: ClipAnalysis, source_fps, target_fps) -> list[OutFrame]:
    """Which source frames or drawing pairs (by their first source frame) make each output frame."""
    n = analysis.num_frames
    starts = analysis.starts
    cut_before = set(analysis.cuts)
    step = as_fraction(source_fps) / as_fraction(target_fps)  # source frames per output frame
    cadence = analysis.cadence
    limit = hold_limit(cadence)
    plan = []
    k = 0
    for j in range(output_count(n, source_fps, target_fps)):
        tau = j * step
        while k + 1 < len(starts) and starts[k + 1] <= tau:
            k += 1
        s = starts[k]
        if k + 1 >= len(starts) or (k + 1) in cut_before:
            plan.append(OutFrame(s))  # last drawing, or a cut ahead: hold
            continue
        nxt = starts[k + 1]
        length = nxt - s
        begin, span = (s, length) if length <= limit else (nxt - cadence, cadence)
        if tau <= begin:
            plan.append(OutFrame(s))
            continue
        plan.append(OutFrame(s, nxt, float((tau - begin) / span)))
    return plan


def pairs_in_plan(plan: list[OutFrame]) -> list[tuple[int, int]]:
    """The distinct (a, b) pairs the plan interpolates, in order."""
    seen, out = set(), []
    for f in plan:
        if not f.is_copy and (f.a, f.b) not in seen:
            seen.add((f.a, f.b))
            out.append((f.a, f.b))
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def describe(analysis: ClipAnalysis, plan: list[OutFrame], source_fps, target_fps) -> list[str]:
    """Human-readable lines about what was found and what the plan does."""
    lines = []
    n, k = analysis.num_frames, len(analysis.starts)
    if analysis.dedup:
        holds = analysis.holds
        c = analysis.cadence
        counts = Counter(holds[:-1] if len(holds) > 1 else holds)
        share = counts.get(c, 0) / max(1, sum(counts.values()))
        detail = ", ".join(f"{cnt} x {h}" for h, cnt in sorted(counts.items()))
        if analysis.duplicates == 0:
            lines.append(f"Dedup (threshold {analysis.dup_threshold:g}): no repeated frames; "
                         f"{n} distinct drawings (on ones).")
        else:
            mostly = "" if share == 1 else "mostly "
            lines.append(f"Dedup (threshold {analysis.dup_threshold:g}): {k} distinct drawings in {n} frames, "
                         f"{mostly}{cadence_name(c)} (holds: {detail} frames); {analysis.duplicates} repeated "
                         f"frames are not interpolated from.")
            long_holds = sum(1 for h in holds[:-1] if h > hold_limit(c))
            if long_holds:
                lines.append(f"{long_holds} held pose(s) longer than {hold_limit(c)} frames kept still; motion "
                             f"into the next drawing spread over its last {c} frame(s).")
    else:
        lines.append("Dedup: off (every frame is its own drawing).")
    if analysis.cut_threshold >= 1.0:
        lines.append("Scene cuts: detection off (threshold 1.0).")
    elif not analysis.cuts:
        lines.append(f"Scene cuts (threshold {analysis.cut_threshold:g}): none found.")
    else:
        where = ", ".join(f"before frame {f} (score {s:.2f})" for f, s in sorted(analysis.cut_scores.items()))
        lines.append(f"Scene cuts (threshold {analysis.cut_threshold:g}): {len(analysis.cuts)}, {where}; "
                     f"never interpolated across.")
    interp = sum(1 for f in plan if not f.is_copy)
    lines.append(f"Output: {len(plan)} frames at {float(target_fps):g} fps from {n} at {float(source_fps):g} fps; "
                 f"{interp} interpolated over {len(pairs_in_plan(plan))} drawing pairs, {len(plan) - interp} copied.")
    return lines
