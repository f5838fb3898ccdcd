"""Attention backend choice, made at run time: xformers when it is installed and the device is CUDA,
PyTorch's scaled-dot-product attention (diffusers' default processors) otherwise."""
from __future__ import annotations

import importlib.util

import torch


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def select_attention_backend(module: torch.nn.Module, device: torch.device) -> str:
    """Switch a diffusers model's attention to xformers where that works; returns the backend used."""
    if torch.device(device).type == "cuda" and xformers_available() and hasattr(
            module, "enable_xformers_memory_efficient_attention"):
        try:
            module.enable_xformers_memory_efficient_attention()
            return "xformers"
        except Exception:  # a build without kernels for this GPU: stay on SDPA
            if hasattr(module, "disable_xformers_memory_efficient_attention"):
                module.disable_xformers_memory_efficient_attention()
    return "sdpa"
