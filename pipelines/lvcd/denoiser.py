"""The LVCD denoiser for pipelines/svd/sampler.py: sketch ControlNet residuals into the SVD UNet, with the frame
plan (reference attention, temporal isolation) set on both networks for the call."""
from __future__ import annotations

import torch

from ..svd.controlled_unet import svd_unet_forward
from ..reference_attention.plan import FramePlan


class LVCDDenoiser:
    """``__call__(x_in, c_noise, hidden, time_ids, cond_latents, step) -> v`` (the ``Denoiser`` protocol).

    hints: [T, 3, H, W] lineart of the pass's T frames (0..1, white lines on black, H = 8h); repeated over the
    batch (CFG doubles it). plan: the :class:`FramePlan` of this pass (``plan.num_frames == T``)."""

    def __init__(self, model, hints: torch.Tensor, plan: FramePlan, control_scale: float = 1.0):
        if hints.ndim != 4 or hints.shape[1] != 3:
            raise ValueError(f"hints must be [T, 3, H, W], got {tuple(hints.shape)}")
        if plan is not None and hints.shape[0] != plan.num_frames:
            raise ValueError(f"{hints.shape[0]} hint frames for a {plan.num_frames}-frame plan")
        self.model = model
        self.hints = hints
        self.plan = plan
        self.control_scale = control_scale
        self.dtype = next(model.unet.parameters()).dtype
        self._hints_on = None

    def __call__(self, x_in, c_noise, hidden, time_ids, cond_latents, step):
        batch, frames = x_in.shape[:2]
        if frames != self.hints.shape[0]:
            raise ValueError(f"the pass has {frames} frames but {self.hints.shape[0]} hints")
        dt = self.dtype
        sample = torch.cat([x_in.to(dt), cond_latents.to(dt)], dim=2)
        hidden, time_ids = hidden.to(dt), time_ids.to(dt)
        if self._hints_on is None or self._hints_on.device != sample.device:
            self._hints_on = self.hints.to(device=sample.device, dtype=dt)
        hint = self._hints_on.repeat(batch, 1, 1, 1) if batch > 1 else self._hints_on
        with self.model.use_plan(self.plan):
            down, mid = self.model.controlnet(sample, c_noise, hidden, time_ids, hint,
                                              conditioning_scale=self.control_scale)
            return svd_unet_forward(self.model.unet, sample, c_noise, hidden, time_ids, down, mid)
