"""Loading AniSora weights: backbone detection (Wan2.1-I2V for V2/V3/anymask, CogVideoX-5B-I2V for V1) and the
AniSora model built from the Wan backbone's readers (``pipelines/backbones/wan/loader.py``).

Everything is read from local files; configs come from tensor shapes, never from the Hub.
"""
from __future__ import annotations

import os

import torch

from .. import dependencies
from ..checkpoint_io import explain_load_errors
from ..errors import AnimeVideoModelError
from ..backbones.wan import keys as wan_keys
from ..backbones.wan.loader import (  # noqa: F401  (re-exported: the registry and tests reach them here)
    DTYPES, TORCH_DTYPES, _folder_class, cast_like_diffusers, empty_parameters, is_block_linear_weight,
    is_wan_diffusers_folder, keeps_fp32, load_wan_transformer, load_wan_vae, peek, read_cast, resolve_dtype,
    store_linears, transformer_dtype_for)
from .model import AniSoraModel

EXPECTED_WAN = (
    "Expected an AniSora V2/V3/anymask transformer (Wan2.1-I2V-14B layout) in models/diffusion_models, e.g. "
    "IndexTeam/Index-anisora V3/diffusion_pytorch_model.safetensors (native Wan names) or Kijai's "
    "Wan2_1-Anisora-I2V-480P-14B_fp8_e4m3fn.safetensors, or a diffusers folder with transformer/ and vae/ in "
    "models/diffusers; an AniSora V1 (CogVideoX-5B) diffusers folder also works.")


def _cogvideox_module():
    try:
        from . import cogvideox
    except ImportError as e:
        return None, e
    return cogvideox, None


def is_cogvideox_folder(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    mod, _ = _cogvideox_module()
    fn = getattr(mod, "is_cogvideox_folder", None) if mod else None
    if fn is not None:
        return bool(fn(path))
    return _folder_class(path, "transformer") == "CogVideoXTransformer3DModel"


def is_anisora_folder(path: str) -> bool:
    return is_wan_diffusers_folder(path) or is_cogvideox_folder(path)


def detect_backbone(path: str) -> str:
    """'wan' or 'cogvideox' for a transformer file or diffusers folder; a clear error otherwise."""
    if os.path.isdir(path):
        if is_wan_diffusers_folder(path):
            return "wan"
        if is_cogvideox_folder(path):
            return "cogvideox"
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is a folder but not a diffusers Wan or CogVideoX model (no "
            f"transformer/config.json naming WanTransformer3DModel or CogVideoXTransformer3DModel). {EXPECTED_WAN}")
    keys, _ = peek(path)
    if wan_keys.is_wan_transformer(keys):
        return "wan"
    mod, err = _cogvideox_module()
    if mod is not None and getattr(mod, "is_cogvideox_state_dict", None) and mod.is_cogvideox_state_dict(keys):
        return "cogvideox"
    hint = "" if mod is not None else f" (the CogVideoX/AniSora V1 backbone is not available here: {err})"
    raise AnimeVideoModelError(
        f"'{os.path.basename(path)}' is neither a Wan2.1 transformer (no 'head.modulation'/'patch_embedding') "
        f"nor a CogVideoX transformer{hint}. {EXPECTED_WAN}")


def load_wan(transformer_path: str, vae_path: str | None, dtype_name: str = "auto",
             device: torch.device | str = "cpu") -> AniSoraModel:
    compute, storage = resolve_dtype(dtype_name, torch.device(device))
    transformer = load_wan_transformer(transformer_path, compute, storage)
    if vae_path is None:
        if not os.path.isdir(transformer_path):
            raise AnimeVideoModelError(
                "vae_name: a single-file Wan transformer needs the Wan2.1 VAE (Wan2.1_VAE.pth or "
                "wan_2.1_vae.safetensors in models/vae).")
        vae_path = transformer_path
    vae = load_wan_vae(vae_path, torch.float32)
    source = os.path.basename(transformer_path.rstrip("/"))
    return AniSoraModel("wan", transformer, vae, compute, source,
                        extras={"storage_dtype": storage, "vae_source": os.path.basename(vae_path.rstrip("/"))})


def load_anisora(transformer_path: str, vae_path: str | None, dtype_name: str = "auto",
                 device: torch.device | str = "cpu") -> AniSoraModel:
    """Detect the backbone and load it (Wan here, CogVideoX through ``cogvideox.load_cogvideox``)."""
    backbone = detect_backbone(transformer_path)
    capability = "AniSora V2/V3 (Wan2.1)" if backbone == "wan" else "AniSora V1 (CogVideoX)"
    dependencies.require(capability)
    if backbone == "wan":
        # an import or attribute that the installed packages lack despite their versions names this path's floors
        with explain_load_errors(os.path.basename(transformer_path.rstrip("/")), transformer_path,
                                 needs=dict(dependencies.NEEDS[capability])):
            return load_wan(transformer_path, vae_path, dtype_name, device)
    mod, err = _cogvideox_module()
    if mod is None:
        raise AnimeVideoModelError(f"'{os.path.basename(transformer_path)}' is an AniSora V1 (CogVideoX) model, "
                                   f"but the CogVideoX backbone is not available in this install: {err}")
    compute, _ = resolve_dtype("bf16" if dtype_name == "fp8_e4m3fn" else dtype_name, torch.device(device))
    import inspect

    params = inspect.signature(mod.load_cogvideox).parameters
    if len(params) >= 3:  # (transformer path or folder, vae path or None, dtype)
        return mod.load_cogvideox(transformer_path, vae_path, compute)
    return mod.load_cogvideox(transformer_path, compute)
