"""Key mapping of the released LVCD weights (``lvcd.ckpt`` / ``lvcd-fp16.safetensors``, sgm names) to diffusers names.

The file holds ``control_model.*`` (the whole ControlNet, 671 tensors at real size) and the fine-tuned
``model.diffusion_model.*attn1*`` tensors of the UNet (160), digest originals.md §1.2/§1.4:

- ``control_model.{time_embed,label_emb,input_blocks,middle_block}.*``: the SVD UNet rules (pipelines/svd/keymap.py);
- ``control_model.input_hint_block.{0,2,...,14}`` -> ``controlnet_cond_embedding.{conv_in, blocks.0..5, conv_out}``;
- ``control_model.zero_convs.i.0`` -> ``controlnet_down_blocks.i``;
- ``control_model.middle_block_out.0`` -> ``controlnet_mid_block``;
- ``model.diffusion_model.*``: the SVD UNet rules, overlaid on the SVD UNet.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from ..svd import keymap as svd_keymap

CONTROL_PREFIX = "control_model."
UNET_PREFIX = svd_keymap.UNET_PREFIX
DEFAULT_HINT_LEVELS = 4  # ControlNetConditioningEmbedding block_out_channels length: 2*4 = 8 convs


def control_key_to_diffusers(key: str, layers_per_block: int, hint_levels: int = DEFAULT_HINT_LEVELS) -> str:
    """One ControlNet key (without ``control_model.``) -> its :class:`~.controlnet.SVDControlNet` name."""
    m = re.match(r"input_hint_block\.(\d+)\.(weight|bias)$", key)
    if m:
        i = int(m[1])
        last = 2 * (2 * hint_levels - 1)
        if i % 2 or i > last:
            raise KeyError(f"unknown LVCD hint-encoder key: {key}")
        if i == 0:
            return f"controlnet_cond_embedding.conv_in.{m[2]}"
        if i == last:
            return f"controlnet_cond_embedding.conv_out.{m[2]}"
        return f"controlnet_cond_embedding.blocks.{i // 2 - 1}.{m[2]}"
    m = re.match(r"zero_convs\.(\d+)\.0\.(weight|bias)$", key)
    if m:
        return f"controlnet_down_blocks.{m[1]}.{m[2]}"
    m = re.match(r"middle_block_out\.0\.(weight|bias)$", key)
    if m:
        return f"controlnet_mid_block.{m[1]}"
    if not re.match(r"(time_embed|label_emb|input_blocks|middle_block)\.", key):
        raise KeyError(f"unknown LVCD ControlNet key: {key}")
    return svd_keymap.unet_key_to_diffusers(key, layers_per_block)


def control_key_to_sgm(key: str, layers_per_block: int, hint_levels: int = DEFAULT_HINT_LEVELS) -> str:
    """Inverse of :func:`control_key_to_diffusers` (used to write test files in the released layout)."""
    m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(weight|bias)$", key)
    if m:
        if m[1] == "conv_in":
            i = 0
        elif m[1] == "conv_out":
            i = 2 * (2 * hint_levels - 1)
        else:
            i = 2 * (int(m[2]) + 1)
        return f"input_hint_block.{i}.{m[3]}"
    m = re.match(r"controlnet_down_blocks\.(\d+)\.(weight|bias)$", key)
    if m:
        return f"zero_convs.{m[1]}.0.{m[2]}"
    m = re.match(r"controlnet_mid_block\.(weight|bias)$", key)
    if m:
        return f"middle_block_out.0.{m[1]}"
    return svd_keymap.unet_key_to_sgm(key, layers_per_block, set())


def hint_levels_of(keys) -> int:
    """The number of hint-encoder levels from the ``input_hint_block`` conv indices (4 in the release)."""
    idx = sorted(int(m[1]) for k in keys if (m := re.match(r"(?:control_model\.)?input_hint_block\.(\d+)\.weight$", k)))
    if not idx:
        return DEFAULT_HINT_LEVELS
    return (len(idx)) // 2


def split_lvcd_state_dict(sd: Mapping[str, torch.Tensor], layers_per_block: int
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(ControlNet state dict, UNet overlay state dict), both in diffusers names. Other keys are ignored."""
    levels = hint_levels_of(sd.keys())
    control, unet = {}, {}
    for k, v in sd.items():
        if k.startswith(CONTROL_PREFIX):
            control[control_key_to_diffusers(k[len(CONTROL_PREFIX):], layers_per_block, levels)] = v
        elif k.startswith(UNET_PREFIX):
            unet[svd_keymap.unet_key_to_diffusers(k[len(UNET_PREFIX):], layers_per_block)] = v
    return control, unet


def lvcd_state_dict_to_sgm(controlnet_sd: Mapping[str, torch.Tensor], unet_overlay_sd: Mapping[str, torch.Tensor],
                           layers_per_block: int, up_levels_with_attention: set[int]) -> dict[str, torch.Tensor]:
    """Diffusers-named ControlNet + UNet-overlay tensors -> one state dict in the released LVCD layout."""
    levels = len([k for k in controlnet_sd if re.match(r"controlnet_cond_embedding\.blocks\.\d+\.weight$", k)]) // 2 + 1
    out = {}
    for k, v in controlnet_sd.items():
        out[CONTROL_PREFIX + control_key_to_sgm(k, layers_per_block, levels)] = v
    for k, v in unet_overlay_sd.items():
        out[UNET_PREFIX + svd_keymap.unet_key_to_sgm(k, layers_per_block, up_levels_with_attention)] = v
    return out


def is_lvcd_unet_key(diffusers_key: str) -> bool:
    """The UNet tensors LVCD fine-tuned: spatial and temporal ``attn1`` of every transformer."""
    return bool(re.search(r"\.(transformer_blocks|temporal_transformer_blocks)\.\d+\.attn1\.", diffusers_key))
