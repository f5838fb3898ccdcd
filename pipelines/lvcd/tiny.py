"""Tiny random-weight LVCD in the released layouts, for tests and CPU demos.

``lvcd/lvcd-fp16.safetensors`` has exactly the real key layout (``control_model.*`` + the UNet's
``model.diffusion_model.*attn1*``) for the tiny SVD config of pipelines/svd/tiny.py, and
``checkpoints/svd.safetensors`` is the matching tiny SVD sgm single file (the base it overlays).
"""
from __future__ import annotations

import os

import torch

from ..svd import tiny as svd_tiny
from . import keymap
from .controlnet import SVDControlNet

TINY_FILES = ("lvcd/lvcd-fp16.safetensors", "checkpoints/svd.safetensors")
TINY_HINT_CHANNELS = (8, 16, 16, 32)  # the release has (16, 32, 96, 256); same 8-conv layout


def build_tiny_lvcd(seed: int = 0):
    """(unet, vae, clip, controlnet, overlay): the tiny SVD base, a random ControlNet for it, and the random
    fine-tuned UNet ``attn1`` tensors (diffusers names) an LVCD file overlays on the base."""
    unet, vae, clip = svd_tiny.build_tiny_svd(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    controlnet = svd_tiny._randomize(SVDControlNet.from_unet(unet, 3, TINY_HINT_CHANNELS), gen)
    overlay = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in unet.state_dict().items()
               if keymap.is_lvcd_unet_key(k)}
    return unet, vae, clip, controlnet, overlay


def lvcd_state_dict(unet, controlnet, overlay: dict | None = None) -> dict[str, torch.Tensor]:
    """The released LVCD layout: ``control_model.*`` + ``model.diffusion_model.*attn1*``. ``overlay`` defaults to
    ``unet``'s own attn1 tensors."""
    if overlay is None:
        overlay = {k: v for k, v in unet.state_dict().items() if keymap.is_lvcd_unet_key(k)}
    ups = {i for i, t in enumerate(unet.config.up_block_types) if t.startswith("CrossAttn")}
    sd = keymap.lvcd_state_dict_to_sgm(controlnet.state_dict(), overlay, unet.config.layers_per_block, ups)
    return {k: v.detach().contiguous() for k, v in sd.items()}


def write_tiny_lvcd_safetensors(path: str, unet, controlnet, overlay: dict | None = None):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.to(torch.float16) for k, v in lvcd_state_dict(unet, controlnet, overlay).items()}, path)


def write_tiny_lvcd_ckpt(path: str, unet, controlnet, overlay: dict | None = None):
    """A Lightning-style ``lvcd.ckpt``: ``{"state_dict": ..., "epoch", "global_step"}`` (fp32), like the release."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"epoch": 0, "global_step": 18000, "state_dict": lvcd_state_dict(unet, controlnet, overlay)}, path)


def write_tiny_lvcd(models_dir: str, seed: int = 0) -> list[str]:
    """Write :data:`TINY_FILES` under a ComfyUI ``models/`` folder; returns their relative paths."""
    unet, vae, clip, controlnet, overlay = build_tiny_lvcd(seed)
    lvcd_rel, svd_rel = TINY_FILES
    write_tiny_lvcd_safetensors(os.path.join(models_dir, lvcd_rel), unet, controlnet, overlay)
    os.makedirs(os.path.join(models_dir, os.path.dirname(svd_rel)), exist_ok=True)
    svd_tiny.write_sgm_file(os.path.join(models_dir, svd_rel), unet, vae, clip)
    return list(TINY_FILES)
