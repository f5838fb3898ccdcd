"""Flow-matching sampling for the Wan2.1 backbone (AniSora V2/V3/anymask), as AniSora's own (native Wan) code
runs it.

The solvers are diffusers' own schedulers: ``UniPCMultistepScheduler(prediction_type="flow_prediction",
use_flow_sigmas=True, flow_shift=shift)`` (the Wan/AniSora solver, "unipc") or
``FlowMatchEulerDiscreteScheduler(shift=shift)`` ("euler", an extra: native Wan has UniPC and DPM++ only).
Both shift the flow time as ``sigma' = shift·s / (1 + (shift − 1)·s)``; AniSora's README uses shift 5, 8 steps
and guidance 1 (distilled: no unconditional pass).

Time grid of "unipc": native Wan's ``FlowUniPCMultistepScheduler`` (the solver in AniSora V2/V3/anymask's own
inference code, which their README commands run) spaces the unshifted flow time as
``s_k = (1 − 1/1000)·(1 − k/N)``, k = 0..N−1; diffusers' UniPC with flow sigmas uses
``1 − k·(1 − 1/1000)/N`` instead (0.001 higher before the shift: at 8 steps, shift 5 the model would see
timesteps 893/750/625/418 where AniSora's code gives 892/749/624/416). :class:`WanUniPC` is diffusers' UniPC
on the native grid; with it, the solver's steps equal native Wan's (checked against the original scheduler to
~1e-7 in float32). "euler" keeps diffusers' own grid.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

from ..errors import AnimeVideoInputError

SAMPLERS = ("unipc", "euler")
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(s, shift: float):
    return shift * s / (1 + (shift - 1) * s)


def wan_flow_times(steps: int) -> np.ndarray:
    """Native Wan's unshifted flow times for ``steps`` steps, high to low (float64): (1 − 1/1000)·(1 − k/N)."""
    return np.linspace(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS, 0.0, int(steps) + 1)[:-1]


@functools.lru_cache(maxsize=None)
def _wan_unipc_class():
    from diffusers import UniPCMultistepScheduler

    class WanUniPC(UniPCMultistepScheduler):
        """diffusers' UniPC whose default time grid is native Wan's (:func:`wan_flow_times`, then the shift)."""

        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
            if sigmas is None and num_inference_steps is not None and self.config.use_flow_sigmas:
                sigmas = wan_flow_times(num_inference_steps)
            return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)

    return WanUniPC


def make_scheduler(sampler: str, shift: float):
    if shift <= 0:
        raise AnimeVideoInputError(f"shift: {shift} must be above 0 (AniSora uses 5; 3 is suggested for 480p).")
    if sampler == "unipc":
        return _wan_unipc_class()(num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction",
                                  use_flow_sigmas=True, flow_shift=float(shift), solver_order=2,
                                  solver_type="bh2", predict_x0=True, lower_order_final=True)
    if sampler == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift))
    raise AnimeVideoInputError(f"sampler: '{sampler}' is not one of {', '.join(SAMPLERS)}.")


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)


def sample(velocity: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], latents: torch.Tensor,
           scheduler, steps: int, cfg: float | Callable[[torch.Tensor], float],
           on_step: Callable[[int, int], None] | None = None,
           on_denoised: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate from noise ``latents`` (float32). ``velocity(x, t, positive)`` is the transformer's
    prediction with the positive (True) or negative (False) prompt; cfg <= 1 skips the negative pass. ``cfg``
    may be a function of the timestep (Wan2.2: each expert has its own guidance, as native Wan2.2 runs it).
    ``on_denoised(step, total, x0)`` gets each step's clean estimate x0 = x − σ·v (σ = t / 1000), for previews."""
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps} must be at least 1.")
    cfg_at = cfg if callable(cfg) else (lambda t: cfg)
    scheduler.set_timesteps(int(steps), device=latents.device)
    timesteps = scheduler.timesteps
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        pred = velocity(latents, t, True)
        scale = float(cfg_at(t))
        if scale > 1.0:
            pred = cfg_combine(pred, velocity(latents, t, False), scale)
        if on_denoised is not None:
            sigma = float(t) / scheduler.config.num_train_timesteps
            on_denoised(i + 1, total, latents - sigma * pred.float())
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1, total)
    return latents
