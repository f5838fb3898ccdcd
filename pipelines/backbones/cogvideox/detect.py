"""Is this a CogVideoX (AniSora V1) transformer or VAE? Read from tensor names and shapes, or a diffusers
folder's config, never from the file name."""
from __future__ import annotations

import json
import os

from ...checkpoint_io import read_keys

SAT_PREFIX = "model.diffusion_model."


def _strip(keys) -> list[str]:
    return [k[len(SAT_PREFIX):] if k.startswith(SAT_PREFIX) else k for k in keys]


def cogvideox_layout(keys) -> str | None:
    """"diffusers", "sat" or None for a transformer state dict's keys."""
    ks = set(_strip(keys))
    if "patch_embed.text_proj.weight" in ks and "transformer_blocks.0.norm1.linear.weight" in ks:
        return "diffusers"
    if ("mixins.patch_embed.text_proj.weight" in ks or "transformer.layers.0.attention.query_key_value.weight" in ks) \
            and any(k.startswith("mixins.adaln_layer.adaLN_modulations.") for k in ks):
        return "sat"
    return None


def is_cogvideox_state_dict(keys) -> bool:
    """A CogVideoX transformer, in diffusers or SAT key layout."""
    return cogvideox_layout(keys) is not None


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _transformer_dir(path: str) -> str | None:
    for d in (os.path.join(path, "transformer"), path):
        cfg = _read_json(os.path.join(d, "config.json"))
        if isinstance(cfg, dict) and cfg.get("_class_name") == "CogVideoXTransformer3DModel":
            return d
    return None


def is_cogvideox_folder(path: str) -> bool:
    """A diffusers folder holding a CogVideoX transformer (a whole pipeline, or just its ``transformer/``)."""
    return bool(path) and os.path.isdir(path) and _transformer_dir(path) is not None


def is_cogvideox_file(path: str) -> bool:
    """A CogVideoX transformer file (diffusers or SAT layout, including SAT's ``{"module": …}`` .pt)."""
    return os.path.isfile(path) and is_cogvideox_state_dict(read_keys(path))


def is_sat_vae_state_dict(keys) -> bool:
    return any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys)


def is_cogvideox_vae(shapes) -> bool:
    """A CogVideoX 3D VAE in diffusers or SAT names: its first convolution is a 5-D (causal 3D) kernel."""
    for k in ("encoder.conv_in.conv.weight", "first_stage_model.encoder.conv_in.conv.weight"):
        if k in shapes:
            return len(tuple(shapes[k])) == 5
    return False
