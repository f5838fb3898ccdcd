"""How the frames of one LVCD forward pass attend to each other (paper §4.1-4.2, digest B3/B4).

A pass holds T frames per sample: ``num_ref_frames`` leading *reference-path* frames (isolated in every
temporal layer) followed by the video frames. Every spatial self-attention (``attn1`` of the spatial
transformer blocks, in the UNet and the ControlNet) attends to ``[K,V of frame self_index[p] ;
K,V of frame ref_index[p]]`` for query frame p, with ``ref_log_bias[p]`` added to the logits of the
reference half in layers whose per-network index is ``<= bias_max_layer``.

This module is only data: the attention processors (``attention.py``) read a plan, the long-video
scheduler (``pipelines/long_video``) writes one per segment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_ALPHA = 10.0
DEFAULT_SHIFT = 3
DEFAULT_BIAS_MAX_LAYER = 12  # the reference code biases hook layers 0..12 of each network


@dataclass(frozen=True)
class FramePlan:
    num_frames: int  # T, reference-path frames included
    num_ref_frames: int  # d: leading frames isolated in temporal layers (position id 0 each)
    self_index: torch.Tensor  # [T] long: frame whose own K/V forms the self half for query frame p
    ref_index: torch.Tensor  # [T] long: frame whose K/V forms the reference half
    ref_log_bias: torch.Tensor  # [T] float: logit bias on the reference half (0 or ln alpha)
    bias_max_layer: int = DEFAULT_BIAS_MAX_LAYER
    reference_attention: bool = True  # False: plain self-attention, the stock SVD behaviour

    def __post_init__(self):
        t = self.num_frames
        for name in ("self_index", "ref_index", "ref_log_bias"):
            v = getattr(self, name)
            if v.shape != (t,):
                raise ValueError(f"FramePlan.{name} has shape {tuple(v.shape)}, expected ({t},)")
        if not 0 <= self.num_ref_frames < t:
            raise ValueError(f"FramePlan.num_ref_frames {self.num_ref_frames} must be in [0, {t})")

    @property
    def num_video_frames(self) -> int:
        return self.num_frames - self.num_ref_frames

    @property
    def has_bias(self) -> bool:
        return bool((self.ref_log_bias != 0).any())


def stock_plan(num_frames: int) -> FramePlan:
    """No reference path and no reference attention: the patched networks equal stock SVD."""
    idx = torch.arange(num_frames)
    return FramePlan(num_frames, 0, idx, idx, torch.zeros(num_frames), reference_attention=False)


def normal_plan(num_ref_frames: int, num_video_frames: int) -> FramePlan:
    """Training layout and the first segment ('normal' mode): self = own frame; reference = own frame for the
    reference-path frames, frame 0 (the reference image) for the video frames; no bias."""
    t = num_ref_frames + num_video_frames
    idx = torch.arange(t)
    ref = torch.where(idx < num_ref_frames, idx, torch.zeros_like(idx))
    return FramePlan(t, num_ref_frames, idx.clone(), ref, torch.zeros(t))


def prevref_plan(overlap: int, num_video_frames: int, shift: int = DEFAULT_SHIFT, alpha: float = DEFAULT_ALPHA,
                 bias_max_layer: int = DEFAULT_BIAS_MAX_LAYER, use_shift: bool = True,
                 use_prev_reference: bool = True, known: int | None = None) -> FramePlan:
    """Later segments ('prevref' mode), digest B4, with d = 1 + overlap reference-path frames:
    position 0 = the reference image, 1..o = the previous segment's last o results, then o overlapped
    video frames and the new ones.

    - self half: own frame, except new frames p >= d + o read frame max(p - shift, d) (Eq. 8; the paper's
      shift 3 < o = 4 never reaches the clamp);
    - reference half: own frame for the reference path; overlapped frame d + j reads prev-ref frame 1 + j
      (Eq. 7) with logit bias ln(alpha); new frames read frame 0.

    ``known`` (default ``overlap``) is the number of leading video frames already generated (blended). The
    last segment of a clip shifts back to end exactly at the clip's end, so it can know more than
    ``overlap`` frames; the prev-ref path then holds the last ``overlap`` of them, which keep the bias, and
    the earlier known frames read frame 0 like new ones (without the shift: their self half is their own).
    """
    known = overlap if known is None else known
    if known < overlap:
        raise ValueError(f"known ({known}) must be >= overlap ({overlap})")
    d = 1 + overlap
    t = d + num_video_frames
    idx = torch.arange(t)
    self_index = idx.clone()
    ref_index = torch.where(idx < d, idx, torch.zeros_like(idx))
    bias = torch.zeros(t, dtype=torch.float64)  # ln(alpha) exact; the processors cast to the query dtype
    if use_shift and shift:
        new = idx >= d + known
        # never before the first video frame: with shift > known (e.g. overlap 0) p - shift would land on the
        # reference path or, negative, wrap around to the clip's last (noisiest) frames
        self_index[new] = (idx[new] - shift).clamp_min(d)
    if use_prev_reference and overlap:
        ov = (idx >= d + known - overlap) & (idx < d + known)
        ref_index[ov] = idx[ov] - known
        bias[ov] = math.log(alpha) if alpha > 0 else float("-inf")
    return FramePlan(t, d, self_index, ref_index, bias, bias_max_layer=bias_max_layer)
