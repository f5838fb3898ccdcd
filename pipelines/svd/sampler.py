"""EDM sampling for SVD: Karras sigmas, v-prediction preconditioning, Euler steps, linear frame CFG.

Preconditioning (Karras et al. 2022, with SVD's v-parameterisation, ``VScalingWithEDMcNoise``):
    c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_noise = ln(s)/4
    D(x; s) = c_skip * x + c_out * F(c_in * x, c_noise)

The loop is built to be extended without being rewritten:
- ``denoiser``: any callable ``(x_in, c_noise, hidden, time_ids, cond_latents, step) -> v`` (ControlNet
  residuals and attention processors live there);
- ``denoised_hooks``: each may replace the denoised estimate of chosen frames/pixels with known
  latents (spatiotemporal masks, overlapped blending);
- ``callback``: progress, preview and interrupt, once per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .conditioning import SVDConditioning

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO,
                  device=None) -> torch.Tensor:
    """sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, then a final 0.

    Computed in float64 and stored in float32, exactly as Stability's EDMDiscretization and diffusers do.
    """
    ramp = np.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return torch.from_numpy(sigmas).to(device=device)


def frame_guidance(min_cfg: float, max_cfg: float, num_frames: int, device=None) -> torch.Tensor:
    """Guidance rising linearly over frames, [1, F, 1, 1, 1] (SVD's LinearPredictionGuider)."""
    return torch.linspace(min_cfg, max_cfg, num_frames, device=device).view(1, num_frames, 1, 1, 1)


class Denoiser(Protocol):
    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, hidden: torch.Tensor, time_ids: torch.Tensor,
                 cond_latents: torch.Tensor, step: int) -> torch.Tensor: ...


class UNetDenoiser:
    """The plain SVD UNet: concat the conditioning latent on channels and predict v."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.dtype = next(unet.parameters()).dtype

    def __call__(self, x_in, c_noise, hidden, time_ids, cond_latents, step):
        sample = torch.cat([x_in.to(self.dtype), cond_latents.to(self.dtype)], dim=2)
        return self.unet(sample, c_noise, encoder_hidden_states=hidden.to(self.dtype),
                         added_time_ids=time_ids.to(self.dtype), return_dict=False)[0]


@dataclass
class StepState:
    step: int
    total: int
    sigma: torch.Tensor
    x: torch.Tensor
    denoised: torch.Tensor


DenoisedHook = Callable[[StepState], torch.Tensor]


@dataclass
class EDMEulerSampler:
    denoiser: Denoiser
    denoised_hooks: Sequence[DenoisedHook] = field(default_factory=list)
    callback: Callable[[StepState], None] | None = None

    @torch.inference_mode()
    def sample(self, cond: SVDConditioning, noise: torch.Tensor, sigmas: torch.Tensor,
               guidance: torch.Tensor | None) -> torch.Tensor:
        """noise: [B, F, C, h, w] standard normal. guidance: [1, F, 1, 1, 1] or None (no uncond pass)."""
        use_cfg = guidance is not None and float(guidance.max()) > 1.0
        sigmas = sigmas.to(device=noise.device, dtype=torch.float32)
        x = noise.to(torch.float32) * (sigmas.max() ** 2 + 1) ** 0.5
        if use_cfg:
            hidden = torch.cat([torch.zeros_like(cond.image_embeds), cond.image_embeds])
            cond_latents = torch.cat([torch.zeros_like(cond.image_latents), cond.image_latents])
            time_ids = torch.cat([cond.added_time_ids, cond.added_time_ids])
        else:
            hidden, cond_latents, time_ids = cond.image_embeds, cond.image_latents, cond.added_time_ids
        total = len(sigmas) - 1
        for i in range(total):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            x_in = x / ((sigma ** 2 + 1) ** 0.5)
            c_noise = 0.25 * sigma.log()
            if use_cfg:
                v = self.denoiser(torch.cat([x_in, x_in]), c_noise, hidden, time_ids, cond_latents, i)
                v_uncond, v_cond = v.float().chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
            else:
                v = self.denoiser(x_in, c_noise, hidden, time_ids, cond_latents, i).float()
            denoised = v * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
            state = StepState(i, total, sigma, x, denoised)
            for hook in self.denoised_hooks:
                denoised = hook(state)
                state.denoised = denoised
            # Euler step of the probability-flow ODE dx/ds = (x - D(x; s)) / s; the step to s = 0 lands
            # exactly on D (the same value, without the rounding), so held latents come out bit-exact.
            x = denoised if float(sigma_next) == 0.0 else x + (x - denoised) / sigma * (sigma_next - sigma)
            if self.callback is not None:
                self.callback(StepState(i, total, sigma_next, x, denoised))
        return x
