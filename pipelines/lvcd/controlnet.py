"""LVCD's sketch-guided video ControlNet for the diffusers SVD UNet (paper §4.1, digest B2).

diffusers has no SVD ControlNet class. This one is the encoder half of ``UNetSpatioTemporalConditionModel``
(same sub-module names, so UNet weights copy over) plus diffusers' ``ControlNetConditioningEmbedding`` for the
per-frame lineart (added after ``conv_in``), one zero-initialised 1x1 conv per skip connection
(``controlnet_down_blocks``) and one after the middle block (``controlnet_mid_block``). Its outputs are the
residuals :func:`pipelines.svd.controlled_unet.svd_unet_forward` adds to the UNet's skips and middle block.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..svd.controlled_unet import svd_embeddings, svd_encoder
from ..svd.loader import match_sgm_norm_eps

ENCODER_CONFIG_KEYS = (
    "in_channels", "down_block_types", "block_out_channels", "addition_time_embed_dim",
    "projection_class_embeddings_input_dim", "layers_per_block", "cross_attention_dim",
    "transformer_layers_per_block", "num_attention_heads",
)
DEFAULT_HINT_CHANNELS = (16, 32, 96, 256)


def _per_level(value, levels: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class SVDControlNet(nn.Module):
    def __init__(self, unet_config: Mapping, conditioning_channels: int = 3,
                 conditioning_embedding_out_channels=DEFAULT_HINT_CHANNELS):
        from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_3d_blocks import UNetMidBlockSpatioTemporal, get_down_block

        super().__init__()
        defaults = dict(in_channels=8, down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + (
            "DownBlockSpatioTemporal",), block_out_channels=(320, 640, 1280, 1280), addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=768, layers_per_block=2, cross_attention_dim=1024,
            transformer_layers_per_block=1, num_attention_heads=(5, 10, 20, 20))
        cfg = {k: unet_config.get(k, defaults[k]) for k in ENCODER_CONFIG_KEYS}
        cfg["down_block_types"] = tuple(cfg["down_block_types"])
        cfg["block_out_channels"] = tuple(cfg["block_out_channels"])
        self.config = dict(cfg, conditioning_channels=conditioning_channels,
                           conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels))
        channels = cfg["block_out_channels"]
        levels = len(channels)
        heads = _per_level(cfg["num_attention_heads"], levels)
        cross = _per_level(cfg["cross_attention_dim"], levels)
        layers = _per_level(cfg["layers_per_block"], levels)
        tdepth = _per_level(cfg["transformer_layers_per_block"], levels)
        time_embed_dim = channels[0] * 4

        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_embed_dim)
        self.add_time_proj = Timesteps(cfg["addition_time_embed_dim"], True, downscale_freq_shift=0)
        self.add_embedding = TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], time_embed_dim)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            channels[0], conditioning_channels, tuple(conditioning_embedding_out_channels))

        self.down_blocks = nn.ModuleList()
        skip_channels = [channels[0]]
        out_ch = channels[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            in_ch, out_ch = out_ch, channels[i]
            last = i == levels - 1
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers[i], transformer_layers_per_block=tdepth[i], in_channels=in_ch,
                out_channels=out_ch, temb_channels=time_embed_dim, add_downsample=not last, resnet_eps=1e-5,
                cross_attention_dim=cross[i], num_attention_heads=heads[i], resnet_act_fn="silu"))
            skip_channels += [out_ch] * (layers[i] + (0 if last else 1))
        self.mid_block = UNetMidBlockSpatioTemporal(
            channels[-1], temb_channels=time_embed_dim, transformer_layers_per_block=tdepth[-1],
            cross_attention_dim=cross[-1], num_attention_heads=heads[-1])
        self.controlnet_down_blocks = nn.ModuleList(_zero_conv(c) for c in skip_channels)
        self.controlnet_mid_block = _zero_conv(channels[-1])
        match_sgm_norm_eps(self)  # the original's ResBlock norms (diffusers' blocks build some with 1e-6)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    @classmethod
    def from_unet(cls, unet: nn.Module, conditioning_channels: int = 3,
                  conditioning_embedding_out_channels=DEFAULT_HINT_CHANNELS) -> "SVDControlNet":
        """A ControlNet initialised from ``unet``'s encoder (zero hint output and zero convs), LVCD's init."""
        ref = unet.conv_in.weight
        with torch.device(ref.device):
            net = cls(dict(unet.config), conditioning_channels, conditioning_embedding_out_channels)
        net.to(ref.dtype)
        own = net.state_dict()
        copied = {k: v for k, v in unet.state_dict().items() if k in own}
        net.load_state_dict(copied, strict=False)
        return net

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                added_time_ids: torch.Tensor, hint: torch.Tensor, conditioning_scale: float = 1.0):
        """sample [B, F, C_in, h, w], hint [B*F, 3, 8h, 8w] in 0..1 -> (down residuals, mid residual),
        each [B*F, C, h', w'] (the layout ``svd_unet_forward`` takes)."""
        batch, frames = sample.shape[:2]
        if hint.shape[0] != batch * frames:
            raise ValueError(f"ControlNet hint has {hint.shape[0]} images for {batch}x{frames} frames")
        emb, hidden = svd_embeddings(self, sample, timestep, encoder_hidden_states, added_time_ids)
        x = self.conv_in(sample.flatten(0, 1))
        guide = self.controlnet_cond_embedding(hint.to(x.dtype))
        if guide.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"ControlNet hint of {tuple(hint.shape[-2:])} px gives a {tuple(guide.shape[-2:])} "
                             f"feature map, but the latent is {tuple(x.shape[-2:])}: the hint must be 8x the latent")
        x = x + guide
        indicator = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)
        x, skips = svd_encoder(self, x, emb, hidden, indicator)
        x = self.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=hidden, image_only_indicator=indicator)

        down = [conv(s) for conv, s in zip(self.controlnet_down_blocks, skips)]
        mid = self.controlnet_mid_block(x)
        if conditioning_scale != 1.0:
            down = [d * conditioning_scale for d in down]
            mid = mid * conditioning_scale
        return down, mid
