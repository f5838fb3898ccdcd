"""A tiny random-weight lineart generator in the released on-disk format, under the released file name.

``lineart/sk_model.pth``: a raw state dict saved with ``torch.save``, exactly as lllyasviel/Annotators ships
it, with the released key layout (two down/up steps, three residual blocks); only the width shrinks (base 4
instead of 64).
"""
from __future__ import annotations

import os

import torch

from .model import GeneratorConfig, LineartGenerator

LINEART_FILE = "lineart/sk_model.pth"
TINY_FILES = (LINEART_FILE,)
TINY_CONFIG = GeneratorConfig(input_nc=3, output_nc=1, n_residual_blocks=3, base=4, n_down=2)


def build_tiny_lineart(seed: int = 0, config: GeneratorConfig = TINY_CONFIG) -> LineartGenerator:
    """PyTorch's default init (drawn from a seeded global generator), eval mode, no grads."""
    torch.manual_seed(seed)
    return LineartGenerator(config).eval().requires_grad_(False)


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in build_tiny_lineart(seed).state_dict().items()}


def write_tiny_lineart(models_dir: str, seed: int = 0) -> list[str]:
    """Write ``models_dir/lineart/sk_model.pth``; returns the relative paths written."""
    path = os.path.join(models_dir, LINEART_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(tiny_state_dict(seed + 11), tmp)  # raw state dict, as released
    os.replace(tmp, path)
    return list(TINY_FILES)
