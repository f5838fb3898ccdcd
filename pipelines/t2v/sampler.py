"""The discrete-time sampling loop shared by ModelScopeT2V and I2VGen-XL (and the StreamingT2V chunks built on
ModelScope's UNet): diffusers' scheduler from the folder's own config, classifier-free guidance on the batched
[uncond, cond] prediction, and the scheduler step on frames folded into the batch, exactly as diffusers'
``TextToVideoSDPipeline`` / ``I2VGenXLPipeline`` run it, so the same seed gives the same clip.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AnimeVideoInputError

# "as released": the class the folder's scheduler_config.json names (DDIM for both released folders);
# "dpm++ 2m": DPMSolverMultistepScheduler on the same config, as StreamingT2V's ms_short_gen samples ModelScope.
SCHEDULER_CHOICES = ("as released", "ddim", "dpm++ 2m", "euler")
_CHOICE_CLASSES = {"ddim": "DDIMScheduler", "dpm++ 2m": "DPMSolverMultistepScheduler",
                   "euler": "EulerDiscreteScheduler"}


def make_scheduler(config: dict, choice: str = "as released"):
    """A fresh diffusers scheduler (they hold per-run state) from the folder's config."""
    import diffusers

    if choice not in SCHEDULER_CHOICES:
        raise AnimeVideoInputError(f"scheduler: '{choice}' is not one of {', '.join(SCHEDULER_CHOICES)}.")
    name = config["_class_name"] if choice == "as released" else _CHOICE_CLASSES[choice]
    cls = getattr(diffusers, name)
    return cls.from_config({k: v for k, v in config.items() if k != "_class_name"})


def draw_latent_noise(seed: int, shape) -> tuple[torch.Tensor, torch.Generator]:
    """Initial noise [B, C, F, h, w] from a CPU generator seeded with ``seed`` (diffusers' ``generator``), and that
    generator, which the scheduler's stochastic steps (DDIM eta > 0) go on drawing from, as in diffusers."""
    gen = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32), gen


@dataclass
class StepInfo:
    step: int
    total: int
    timestep: torch.Tensor
    latents: torch.Tensor  # [B, C, F, h, w] after this step
    denoised: torch.Tensor  # [B, C, F, h, w] the step's clean estimate where the scheduler gives one, else latents


# (latent_model_input [2B or B, C, F, h, w], timestep) -> the UNet's prediction (noise or v) for that batch
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _step_kwargs(scheduler, generator, eta: float) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    out = {}
    if "eta" in params:
        out["eta"] = eta
    if "generator" in params:
        out["generator"] = generator
    return out


@torch.inference_mode()
def sample(scheduler, predict: Predictor, noise: torch.Tensor, steps: int, guidance_scale: float,
           generator: torch.Generator | None = None, eta: float = 0.0,
           on_step: Callable[[StepInfo], None] | None = None) -> torch.Tensor:
    """Denoise ``noise`` [B, C, F, h, w] (standard normal) in ``steps`` scheduler steps.

    ``predict`` gets the [uncond; cond] batch when ``guidance_scale`` > 1 (as diffusers' pipelines), else the cond
    batch alone. ``on_step`` runs after every step (progress, Cancel)."""
    if steps < 1:
        raise AnimeVideoInputError(f"steps: {steps} is too small; at least 1 step is needed.")
    cfg = guidance_scale > 1.0
    device = noise.device
    scheduler.set_timesteps(int(steps), device=device)
    latents = noise.float() * scheduler.init_noise_sigma
    extra = _step_kwargs(scheduler, generator, eta)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        model_in = torch.cat([latents] * 2) if cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        pred = predict(model_in, t).float()
        if cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        # the step runs on frames folded into the batch [B*F, C, h, w], as diffusers does (the order of the
        # stochastic steps' noise draws depends on that layout)
        b, c, f, h, w = latents.shape
        folded = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        pred = pred.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        out = scheduler.step(pred, t, folded, **extra)
        latents = out.prev_sample.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        if on_step is not None:
            clean = getattr(out, "pred_original_sample", None)
            denoised = latents if clean is None else clean.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
            on_step(StepInfo(i, len(timesteps), t, latents, denoised))
    return latents
