"""The Wan backbone's registry entries: Wan2.2-I2V-A14B experts (AniSora V3.2), Wan transformers (Wan2.1-I2V for
AniSora V2/V3/anymask, and other Wan layouts the loaders name) and the Wan2.1 VAE.

Detection is the Wan key maps' (keys.py) plus the shapes that tell the layouts apart; loading is loader.py's.
"""
from __future__ import annotations

import torch

from ...registry import Architecture
from . import keys as wan_keys

# The CLIP-image branch Wan2.1-I2V has and the Wan2.2-I2V-A14B experts lack (native and diffusers names).
IMAGE_BRANCH_PREFIXES = ("img_emb.", "condition_embedder.image_embedder.")


def is_wan_transformer(keys, shapes=None) -> bool:
    # also a bare block table with the patch embedding (a partial or re-saved native file)
    stripped = set(wan_keys.strip_prefix(keys))
    return wan_keys.is_wan_transformer(keys) or (
        "patch_embedding.weight" in stripped and "blocks.0.self_attn.q.weight" in stripped)


def is_wan22_i2v_expert(keys, shapes=None) -> bool:
    """One expert of Wan2.2-I2V-A14B: a Wan transformer reading image-to-video latents (in = 2·out + 4
    channels: noise, mask, guide) without the CLIP-image branch. Needs the shapes (a key list alone cannot tell
    it from text-to-video Wan)."""
    if shapes is None or not is_wan_transformer(keys):
        return False
    plain = wan_keys.strip_prefix(dict(shapes))
    if any(k.startswith(IMAGE_BRANCH_PREFIXES) for k in plain):
        return False
    patch, head = plain.get("patch_embedding.weight", ()), plain.get("head.head.weight", plain.get("proj_out.weight", ()))
    if len(patch) != 5 or len(head) != 2:
        return False
    out_channels = head[0] // (patch[2] * patch[3] * patch[4])
    return out_channels != 48 and patch[1] == 2 * out_channels + 4


def is_wan_vae(keys, shapes=None) -> bool:
    return wan_keys.is_native_wan_vae(keys) or wan_keys.is_diffusers_wan_vae(keys)


def _is_wan_folder(path: str) -> bool:
    from . import loader

    return loader.is_wan_diffusers_folder(path) or loader.is_native_wan_folder(path)


def _is_wan22_release_folder(path: str) -> bool:
    from . import loader

    return loader.expert_folders(path) is not None


def load_transformer(source: str, compute: torch.dtype = torch.float32, storage: torch.dtype | None = None):
    from . import loader

    return loader.load_wan_transformer(source, compute, storage)


def load_wan22_expert(source: str, compute: torch.dtype = torch.float32, storage: torch.dtype | None = None):
    """One expert (a file or an expert folder), or (high, low) for a release folder holding both."""
    from . import loader

    pair = loader.expert_folders(source)
    if pair is not None:
        return tuple(loader.load_wan_transformer(p, compute, storage, layout=loader.WAN22_I2V) for p in pair)
    return loader.load_wan_transformer(source, compute, storage, layout=loader.WAN22_I2V)


def load_vae(source: str, dtype: torch.dtype = torch.float32):
    from . import loader

    return loader.load_wan_vae(source, dtype)


ARCHITECTURES = (
    # before the broad Wan entry: an expert is a Wan transformer too
    Architecture("wan22_i2v_expert", "a Wan2.2-I2V-A14B transformer expert (AniSora V3.2; no CLIP-image branch)",
                 "wan22_expert", is_wan22_i2v_expert, load_wan22_expert,
                 hint="load the high- and low-noise experts with AnimeVideo Load AniSora Wan2.2",
                 detect_folder=_is_wan22_release_folder),
    Architecture("wan_transformer", "a Wan/AniSora video transformer", "wan_transformer", is_wan_transformer,
                 load_transformer, hint="load it with AnimeVideo Load AniSora", detect_folder=_is_wan_folder),
    Architecture("wan_vae", "a Wan2.1 VAE", "wan_vae", is_wan_vae, load_vae,
                 hint="AnimeVideo Load AniSora's vae_name"),
)
