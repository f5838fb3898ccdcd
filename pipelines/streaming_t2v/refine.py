"""StreamingT2V's optional refinement stage: SDEdit-style partial noising and randomized blending of overlapping
chunks (official ``model_func.py::video2video_randomized`` and the modified MS-Vid2Vid-XL sampler,
``thirdparty/modelscope/models/multi_modal/video_to_video/utils/diffusion_sdedit.py``, ``model_fn``).

The anime preset skips this stage (the digest's A7 decision); the pack has no loader for MS-Vid2Vid-XL
(ModelScope "damo/Video-to-Video"), so only the math is here, for any video-to-video denoiser given as a callable:

* ``plan_refinement``: the official trim: n = (N - overlap) // (chunk - overlap) chunks, the video cut to
  n (chunk - overlap) + overlap frames; fewer frames than one chunk is an error.
* ``sdedit_start``: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at the start noise level (600 of 1000).
* ``randomized_blend``: at every denoising evaluation each chunk predicts x0 for its frames; chunk k > 0 overwrites
  its predecessor's prediction from a uniformly drawn offset r in [0, overlap - 1] inside their shared frames, so
  the seam moves from step to step instead of sitting at one frame.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AnimeVideoInputError

DEFAULT_CHUNK = 24  # inference.py --chunk
DEFAULT_OVERLAP = 8  # inference.py --overlap
DEFAULT_NOISE_LEVEL = 600  # video2video_randomized: total_noise_levels


@dataclass(frozen=True)
class RefinementPlan:
    frames: int  # frames refined (the input cut to fit the chunks)
    chunk: int
    overlap: int

    @property
    def starts(self) -> list[int]:
        stride = self.chunk - self.overlap
        return list(range(0, self.frames - self.chunk + 1, stride))


def plan_refinement(num_frames: int, chunk: int = DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP) -> RefinementPlan:
    if not 0 < overlap < chunk:
        raise AnimeVideoInputError(f"overlap: {overlap}; it must be at least 1 and below the chunk size {chunk}.")
    n = (num_frames - overlap) // (chunk - overlap)
    frames = n * (chunk - overlap) + overlap
    if n < 1 or frames < chunk:
        raise AnimeVideoInputError(f"frames: {num_frames}; refinement in chunks of {chunk} needs at least {chunk} "
                                   "frames (give a smaller chunk size).")
    return RefinementPlan(frames=frames, chunk=chunk, overlap=overlap)


def sdedit_start(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                 level: int = DEFAULT_NOISE_LEVEL) -> torch.Tensor:
    """Partial noising of the clean latents to timestep ``level - 1`` (SDEdit)."""
    abar = alphas_cumprod[int(level) - 1].to(x0.dtype)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def randomized_blend(xt: torch.Tensor, plan: RefinementPlan,
                     predict_x0: Callable[[torch.Tensor, int], torch.Tensor], rng: random.Random) -> torch.Tensor:
    """x0 for the whole clip [B, C, F, h, w] from per-chunk predictions ``predict_x0(xt_chunk, start)``."""
    if xt.shape[2] != plan.frames:
        raise AnimeVideoInputError(f"latents: {xt.shape[2]} frames, the plan has {plan.frames}.")
    x0 = torch.empty_like(xt)
    for start in plan.starts:
        chunk = predict_x0(xt[:, :, start:start + plan.chunk], start)
        offset = 0 if start == 0 else rng.randint(0, plan.overlap - 1)
        x0[:, :, start + offset:start + plan.chunk] = chunk[:, :, offset:]
    return x0
