"""Tiny random-weight AniSora V1 (CogVideoX-5B-I2V layout) models in the real on-disk layouts, for tests.

The tiny copies keep the real architecture's rules that a loader cannot read from weights: 32 input
channels (16 noise + 16 guide latent), learned positional embeddings + 3D RoPE, 226 text tokens, patch 2,
a x8 / x4 causal VAE with 16 latent channels and scaling factor 0.7. Only widths and depths shrink.
"""
from __future__ import annotations

import json
import os

import torch

from .loader import DEFAULT_SCHEDULER_CONFIG

# The name of the community diffusers copy of AniSora V1 (Disty0/Index-anisora-5B-diffusers), so the shipped
# V1 workflow runs unchanged on the tiny folder.
FOLDER = "diffusers/Index-anisora-5B-diffusers"
TINY_FILES = (FOLDER,)

TINY_TRANSFORMER = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=32,
    out_channels=16,
    time_embed_dim=8,
    text_embed_dim=4096,  # T5-XXL's real width (the test text encoder serves Wan's UMT5 and V1's T5 alike)
    num_layers=2,
    sample_width=8,  # latent units: 64 px
    sample_height=8,
    sample_frames=9,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=True,
)
TINY_VAE = dict(
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    latent_channels=16,
    norm_num_groups=4,
    temporal_compression_ratio=4,
    scaling_factor=0.7,
)
# CogVideoX-5b-I2V's scheduler (diffusers layout), which AniSora V1 shares.
# The folder layout diffusers writes: the class name plus the released config.
SCHEDULER_CONFIG = {"_class_name": "CogVideoXDPMScheduler", **DEFAULT_SCHEDULER_CONFIG, "trained_betas": None}
MODEL_INDEX = {
    "_class_name": "CogVideoXImageToVideoPipeline",
    "scheduler": ["diffusers", "CogVideoXDPMScheduler"],
    "text_encoder": [None, None],
    "tokenizer": [None, None],
    "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLCogVideoX"],
}


def _randomize(module: torch.nn.Module, gen: torch.Generator, std: float = 0.05) -> torch.nn.Module:
    """Every tensor random (not the library's init, which zeroes some), so a wrong mapping cannot hide."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)
        for name, b in module.named_buffers():
            if name.endswith("pos_embedding"):
                b.copy_(torch.randn(b.shape, generator=gen) * std)
    return module.eval().requires_grad_(False)


def build_tiny_cogvideox(seed: int = 0):
    """(transformer, vae) as diffusers modules with random weights."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    gen = torch.Generator().manual_seed(seed)
    transformer = _randomize(CogVideoXTransformer3DModel(**TINY_TRANSFORMER), gen)
    vae = _randomize(AutoencoderKLCogVideoX(**TINY_VAE), gen, std=0.1)
    return transformer, vae


def write_diffusers_folder(path: str, transformer, vae):
    transformer.save_pretrained(os.path.join(path, "transformer"), safe_serialization=True)
    vae.save_pretrained(os.path.join(path, "vae"), safe_serialization=True)
    os.makedirs(os.path.join(path, "scheduler"), exist_ok=True)
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2)
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f, indent=2)


def write_tiny_cogvideox(models_dir: str, seed: int = 0) -> list[str]:
    """Write the tiny AniSora V1 diffusers folder under ``models_dir``; returns the relative paths written."""
    transformer, vae = build_tiny_cogvideox(seed)
    write_diffusers_folder(os.path.join(models_dir, FOLDER), transformer, vae)
    return list(TINY_FILES)
