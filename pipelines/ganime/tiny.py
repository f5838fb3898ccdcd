"""Tiny random-weight GANime files in our safetensors format, for tests and CPU demos.

Same code, layout and token layout as the thesis model (64x128 frames -> 8x16 = 128 codes, the
last frame plus one previous frame in the context), much smaller widths: a 64-entry codebook, a
2-layer 32-wide GPT-2 and a 32-row remaining-frames table (so at most 33 frames).
"""
from __future__ import annotations

import os

import torch

from . import loader
from .transformer import GANimeTransformer, TransformerConfig
from .vqgan import VQGAN, VQGANConfig

VQGAN_FILE = "ganime/ganime_kny_vqgan.safetensors"
TRANSFORMER_FILE = "ganime/ganime_kny_gpt2_medium.safetensors"

TINY_VQGAN = VQGANConfig(channels=8, channels_multiplier=(1, 2, 2, 4), num_res_blocks=1, attention_resolution=(16,),
                         resolution=128, z_channels=16, embedding_dim=8, num_embeddings=64, image_size=(64, 128),
                         norm_groups=4, attention="scaled")
TINY_TRANSFORMER = TransformerConfig(vocab_size=64, n_positions=512, n_embd=32, n_layer=2, n_head=2,
                                     remaining_frames_size=32, tokens_per_frame=128, frames_before=1)


def build_tiny_vqgan(seed: int = 0, cfg: VQGANConfig = TINY_VQGAN) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(cfg).eval()


def build_tiny_transformer(seed: int = 0, cfg: TransformerConfig = TINY_TRANSFORMER) -> GANimeTransformer:
    torch.manual_seed(seed + 1)
    model = GANimeTransformer(cfg)
    with torch.no_grad():  # well-separated logits, so greedy picks are stable under float reordering
        model.gpt2.transformer.wte.weight.normal_(0.0, 0.5)
        model.remaining_frames.weight.normal_(0.0, 0.5)
    return model.eval()


def build_tiny_ganime(seed: int = 0) -> loader.GANimeModel:
    return loader.GANimeModel(build_tiny_vqgan(seed), build_tiny_transformer(seed), ("tiny-vqgan", "tiny-gpt2"))


def write_tiny_ganime(models_dir: str, seed: int = 0) -> list[str]:
    """Write the two files under ``models_dir/ganime/``; returns their paths relative to ``models_dir``."""
    model = build_tiny_ganime(seed)
    loader.save_vqgan(model.vqgan, os.path.join(models_dir, VQGAN_FILE), note="tiny random-weight test model")
    loader.save_transformer(model.transformer, os.path.join(models_dir, TRANSFORMER_FILE),
                            note="tiny random-weight test model")
    return [VQGAN_FILE, TRANSFORMER_FILE]
