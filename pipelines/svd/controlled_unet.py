"""The SVD UNet forward pass with ControlNet-style residuals, for methods that steer SVD (LVCD's sketch
ControlNet). diffusers' ``UNetSpatioTemporalConditionModel.forward`` has no residual inputs, so this
walks the same sub-modules in the same order and adds the residuals where ControlNet defines them:
one per skip connection after the encoder, and one after the middle block.

Without residuals it computes exactly what ``unet.forward`` computes (tested).
"""
from __future__ import annotations

from typing import Sequence

import torch


def svd_embeddings(net, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                   added_time_ids: torch.Tensor):
    """(time + added-time-ids embedding, cross-attention context), both repeated per frame: the conditioning
    every SVD UNet and SVD ControlNet block takes. ``net`` has the UNet's embedding modules."""
    batch, frames = sample.shape[:2]
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
    t = (t[None] if t.ndim == 0 else t).to(sample.device).expand(batch)
    emb = net.time_embedding(net.time_proj(t).to(sample.dtype))
    time_ids = net.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
    emb = (emb + net.add_embedding(time_ids)).repeat_interleave(frames, dim=0)
    return emb, encoder_hidden_states.repeat_interleave(frames, dim=0)


def svd_encoder(net, x: torch.Tensor, emb: torch.Tensor, hidden: torch.Tensor, indicator: torch.Tensor):
    """The down blocks on the conv_in features ``x`` [B*F, C, h, w] -> (features, the skips incl. ``x``)."""
    skips = (x,)
    for block in net.down_blocks:
        kwargs = dict(hidden_states=x, temb=emb, image_only_indicator=indicator)
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = hidden
        x, res = block(**kwargs)
        skips += res
    return x, skips


def svd_unet_forward(unet, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                     added_time_ids: torch.Tensor,
                     down_block_residuals: Sequence[torch.Tensor] | None = None,
                     mid_block_residual: torch.Tensor | None = None) -> torch.Tensor:
    """sample: [B, F, C_in, h, w] -> [B, F, C_out, h, w]. Residuals are in the flattened [B*F, C, h', w'] layout."""
    batch, frames = sample.shape[:2]
    emb, hidden = svd_embeddings(unet, sample, timestep, encoder_hidden_states, added_time_ids)
    x = unet.conv_in(sample.flatten(0, 1))
    indicator = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)
    x, skips = svd_encoder(unet, x, emb, hidden, indicator)
    if down_block_residuals is not None:
        if len(down_block_residuals) != len(skips):
            raise ValueError(f"expected {len(skips)} down-block residuals, got {len(down_block_residuals)}")
        skips = tuple(s + r.to(s.dtype) for s, r in zip(skips, down_block_residuals))

    x = unet.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=hidden, image_only_indicator=indicator)
    if mid_block_residual is not None:
        x = x + mid_block_residual.to(x.dtype)

    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        kwargs = dict(hidden_states=x, temb=emb, res_hidden_states_tuple=res, image_only_indicator=indicator)
        if i < len(unet.up_blocks) - 1:
            kwargs["upsample_size"] = skips[-1].shape[2:]  # sizes that are not powers-of-two multiples
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = hidden
        x = block(**kwargs)

    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(batch, frames, *x.shape[1:])


class ControlledUNetDenoiser:
    """A :class:`~.sampler.Denoiser` whose residuals come from ``residuals(x_in, c_noise, hidden, time_ids, step)``,
    returning ``(down_block_residuals, mid_block_residual)`` or ``None`` for a plain step."""

    def __init__(self, unet, residuals):
        self.unet = unet
        self.residuals = residuals
        self.dtype = next(unet.parameters()).dtype

    def __call__(self, x_in, c_noise, hidden, time_ids, cond_latents, step):
        res = self.residuals(x_in, c_noise, hidden, time_ids, step)
        down, mid = res if res is not None else (None, None)
        sample = torch.cat([x_in.to(self.dtype), cond_latents.to(self.dtype)], dim=2)
        return svd_unet_forward(self.unet, sample, c_noise, hidden.to(self.dtype), time_ids.to(self.dtype),
                                down, mid)
