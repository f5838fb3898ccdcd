"""Tiny random-weight AniSora V3.2 / Wan2.2-I2V-A14B models (two experts), written in the released layouts.

Wan2.2-I2V-A14B is two Wan transformers of the Wan2.1-I2V-14B size without the CLIP-image branch (no
``img_emb``, no ``k_img``/``v_img``): the high-noise expert takes timesteps t >= 0.9·1000, the low-noise one the
rest; both read 36 channels (16 noise + 4 mask + 16 guide latent) and share the Wan2.1 VAE (16 channels).

* ``write_tiny_wan22``: Comfy-Org's repackaged single files (native names, fp16) in models/diffusion_models,
  ``wan2.2_i2v_high_noise_14B_fp16.safetensors`` / ``wan2.2_i2v_low_noise_14B_fp16.safetensors``, which core's
  Load Diffusion Model reads too (core sees "Wan2.1 without img_emb": its t2v class with in_dim 36, whose
  ``concat_cond`` still builds the 20 condition channels); the VAE is tiny.py's ``vae/wan_2.1_vae.safetensors``.
* ``write_native_release``: Wan-AI's (and AniSora V3.2's) release folder: ``high_noise_model/`` and
  ``low_noise_model/`` (config.json + shards + index each) and ``Wan2.1_VAE.pth``.
* ``write_diffusers_release``: Wan-AI/Wan2.2-I2V-A14B-Diffusers: transformer/, transformer_2/, vae/ and
  model_index.json with ``boundary_ratio``.
"""
from __future__ import annotations

import json
import os

import torch

from . import tiny

HIGH_NOISE_FILE = "diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors"
LOW_NOISE_FILE = "diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors"
TINY_FILES = (HIGH_NOISE_FILE, LOW_NOISE_FILE)
BOUNDARY_RATIO = 0.9

# tiny.py's Wan2.1-I2V config without the CLIP-image branch: the Wan2.2-I2V-A14B expert layout
TINY_EXPERT_CONFIG = dict(tiny.TINY_TRANSFORMER_CONFIG, image_dim=None, added_kv_proj_dim=None)


def build_tiny_experts(seed: int = 0):
    """(high-noise, low-noise) experts with different random weights, so a wrong switch shows."""
    from diffusers import WanTransformer3DModel

    experts = []
    for offset in (10, 20):
        gen = torch.Generator().manual_seed(seed + offset)
        torch.manual_seed(seed + offset)
        experts.append(tiny._randomize(WanTransformer3DModel(**TINY_EXPERT_CONFIG), gen).eval())
    return tuple(experts)


def write_tiny_wan22(models_dir: str, seed: int = 0) -> list[str]:
    high, low = build_tiny_experts(seed)
    tiny.write_native_transformer(os.path.join(models_dir, HIGH_NOISE_FILE), high, dtype=torch.float16)
    tiny.write_native_transformer(os.path.join(models_dir, LOW_NOISE_FILE), low, dtype=torch.float16)
    return list(TINY_FILES)


def write_native_release(path: str, high, low, vae, num_shards: int = 2, dtype: torch.dtype | None = None):
    tiny.write_native_folder(os.path.join(path, "high_noise_model"), high, num_shards, dtype)
    tiny.write_native_folder(os.path.join(path, "low_noise_model"), low, num_shards, dtype)
    tiny.write_native_vae(os.path.join(path, "Wan2.1_VAE.pth"), vae)


def write_diffusers_release(path: str, high, low, vae, boundary_ratio: float = BOUNDARY_RATIO):
    high.save_pretrained(os.path.join(path, "transformer"))
    low.save_pretrained(os.path.join(path, "transformer_2"))
    vae.save_pretrained(os.path.join(path, "vae"))
    index = {"_class_name": "WanImageToVideoPipeline", "_diffusers_version": "0.35.0",
             "boundary_ratio": boundary_ratio, "expand_timesteps": False, "image_encoder": [None, None],
             "image_processor": [None, None], "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
