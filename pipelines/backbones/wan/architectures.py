"""The Wan2.1 backbone's registry entries (AniSora V2/V3/anymask): the transformer and the VAE.

Detection is the Wan key maps' (pipelines/backbones/wan/keys.py); loading calls the AniSora loader, where the Wan
loading code lives for now (it moves to pipelines/backbones/wan/, and this entry with it).
"""
from __future__ import annotations

import torch

from ..backbones.wan import keys as wan_keys
from ..registry import Architecture


def is_wan_transformer(keys, shapes=None) -> bool:
    # also a bare block table with the patch embedding (a partial or re-saved native file)
    return wan_keys.is_wan_transformer(keys) or (
        "patch_embedding.weight" in set(wan_keys.strip_prefix(keys))
        and "blocks.0.self_attn.q.weight" in set(wan_keys.strip_prefix(keys)))


def is_wan_vae(keys, shapes=None) -> bool:
    return wan_keys.is_native_wan_vae(keys) or wan_keys.is_diffusers_wan_vae(keys)


def _is_wan_folder(path: str) -> bool:
    from . import loader

    return loader.is_wan_diffusers_folder(path)


def load_transformer(source: str, compute: torch.dtype = torch.float32, storage: torch.dtype | None = None):
    from . import loader

    return loader.load_wan_transformer(source, compute, storage)


def load_vae(source: str, dtype: torch.dtype = torch.float32):
    from . import loader

    return loader.load_wan_vae(source, dtype)


ARCHITECTURES = (
    Architecture("wan_transformer", "a Wan/AniSora video transformer", "wan_transformer", is_wan_transformer,
                 load_transformer, hint="load it with AnimeVideo Load AniSora", detect_folder=_is_wan_folder),
    Architecture("wan_vae", "a Wan2.1 VAE", "wan_vae", is_wan_vae, load_vae,
                 hint="AnimeVideo Load AniSora's vae_name"),
)
