"""Flow-matching sampling for the Wan2.1 backbone (AniSora V2/V3/anymask), as diffusers' Wan pipeline runs it.

The solvers are diffusers' own schedulers, configured as the Wan-AI diffusers releases are:
``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)``
(the Wan/AniSora default, "unipc") or ``FlowMatchEulerDiscreteScheduler(shift=shift)`` ("euler"). Both
shift the flow time as ``sigma' = shift·s / (1 + (shift − 1)·s)``; AniSora's README uses shift 5, 8 steps
and guidance 1 (distilled: no unconditional pass).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import AnimeVideoInputError

SAMPLERS = ("unipc", "euler")
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(s, shift: float):
    return shift * s / (1 + (shift - 1) * s)


def make_scheduler(sampler: str, shift: float):
    if shift <= 0:
        raise AnimeVideoInputError(f"shift: {shift} must be above 0 (AniSora uses 5; 3 is suggested for 480p).")
    if sampler == "unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction",
                                       use_flow_sigmas=True, flow_shift=float(shift), solver_order=2,
                                       solver_type="bh2", predict_x0=True, lower_order_final=True)
    if sampler == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift))
    raise AnimeVideoInputError(f"sampler: '{sampler}' is not one of {', '.join(SAMPLERS)}.")


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)


def sample(velocity: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], latents: torch.Tensor,
           scheduler, steps: int, cfg: float, on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Integrate from noise ``latents`` (float32). ``velocity(x, t, positive)`` is the transformer's
    prediction with the positive (True) or negative (False) prompt; cfg <= 1 skips the negative pass."""
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps} must be at least 1.")
    scheduler.set_timesteps(int(steps), device=latents.device)
    timesteps = scheduler.timesteps
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        pred = velocity(latents, t, True)
        if cfg > 1.0:
            pred = cfg_combine(pred, velocity(latents, t, False), cfg)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1, total)
    return latents
