"""Loading AniSora weights: backbone detection (Wan2.1-I2V for V2/V3/anymask, CogVideoX-5B-I2V for V1) and the
AniSora model built from the Wan backbone's readers (``pipelines/backbones/wan/loader.py``).

Everything is read from local files; configs come from tensor shapes, never from the Hub.
"""
from __future__ import annotations

import os

import torch

from .. import dependencies, registry
from ..backbones.cogvideox.detect import is_cogvideox_folder  # noqa: F401  (re-exported)
from ..checkpoint_io import explain_load_errors
from ..errors import AnimeVideoModelError
from ..backbones.wan import loader as wan_loader
from ..backbones.wan.loader import (  # noqa: F401  (re-exported: the registry and tests reach them here)
    DTYPES, TORCH_DTYPES, _folder_class, cast_like_diffusers, is_block_linear_weight,
    is_native_wan_folder, is_wan_diffusers_folder, keeps_fp32, load_wan_transformer, load_wan_vae, peek, read_cast,
    resolve_dtype, store_linears, transformer_dtype_for)
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


def is_anisora_folder(path: str) -> bool:
    """A folder Load AniSora takes: diffusers Wan or CogVideoX, or a native Wan folder (config.json beside one
    weights file or shards with their index, as Wan-AI and AniSora publish them)."""
    if wan_loader.expert_folders(path) is not None:
        return False  # a Wan2.2 high/low pair: Load AniSora Wan2.2
    return is_wan_diffusers_folder(path) or is_cogvideox_folder(path) or is_native_wan_folder(path)


def is_anisora_wan22_folder(path: str) -> bool:
    """A Wan2.2-I2V-A14B / AniSora V3.2 release folder holding both experts (native high_noise_model/ +
    low_noise_model/, or diffusers transformer/ + transformer_2/)."""
    return wan_loader.expert_folders(path) is not None


# The registry kinds Load AniSora takes: a Wan2.2 expert is accepted here so that the Wan loader's layout check
# names Load AniSora Wan2.2 for it (as for text-to-video Wan files).
ANISORA_KINDS = ("wan_transformer", "wan22_expert", "cogvideox")


def detect_backbone(path: str) -> str:
    """'wan' or 'cogvideox' for a transformer file or folder; the registry's message (what the file is, what
    was expected) otherwise."""
    if os.path.isdir(path) and wan_loader.expert_folders(path) is None and (
            is_wan_diffusers_folder(path) or is_native_wan_folder(path)):
        return "wan"
    release = os.path.isdir(path) and wan_loader.expert_folders(path) is not None  # both experts: not one model
    kinds = tuple(k for k in ANISORA_KINDS if not (release and k == "wan22_expert"))
    arch = registry.require(path, kinds, expected=EXPECTED_WAN)
    return "cogvideox" if arch.kind == "cogvideox" else "wan"


def folder_has_vae(path: str) -> bool:
    """The folder ships its VAE: diffusers vae/ (Wan, CogVideoX) or a native Wan2.1_VAE.pth."""
    return os.path.isdir(path) and (os.path.isdir(os.path.join(path, "vae")) or
                                    wan_loader.native_vae_file(path) is not None)


def folder_vae(transformer_path: str, vae_path: str | None) -> str:
    """The VAE to load: ``vae_path``, else the one inside the transformer's folder (diffusers vae/ or the
    Wan2.1_VAE.pth a native release ships)."""
    if vae_path is not None:
        return vae_path
    if folder_has_vae(transformer_path):
        return transformer_path
    raise AnimeVideoModelError(
        "vae_name: this Wan transformer has no VAE beside it; pick the Wan2.1 VAE (Wan2.1_VAE.pth or "
        "wan_2.1_vae.safetensors in models/vae).")


def wan_dtypes(dtype_name: str, device, path: str):
    """Wan's dtype choice for this file (``auto`` keeps an fp8 file in fp8): one place to point at the pack's
    dtype policy."""
    return resolve_dtype(dtype_name, torch.device(device), wan_loader.stored_dtype(path))


def load_wan(transformer_path: str, vae_path: str | None, dtype_name: str = "auto",
             device: torch.device | str = "cpu") -> AniSoraModel:
    compute, storage = wan_dtypes(dtype_name, device, transformer_path)
    transformer = load_wan_transformer(transformer_path, compute, storage)
    vae_path = folder_vae(transformer_path, vae_path)
    vae = load_wan_vae(vae_path, torch.float32)
    source = os.path.basename(transformer_path.rstrip("/"))
    return AniSoraModel("wan", transformer, vae, compute, source,
                        extras={"storage_dtype": storage, "vae_source": os.path.basename(vae_path.rstrip("/"))})


def load_wan22(high_noise_path: str, low_noise_path: str | None, vae_path: str | None, dtype_name: str = "auto",
               device: torch.device | str = "cpu") -> AniSoraModel:
    """AniSora V3.2 / Wan2.2-I2V-A14B: the high-noise and low-noise experts (two native files or folders, or one
    release folder holding both, native or diffusers), the boundary between them and the Wan2.1 VAE."""
    release = high_noise_path if low_noise_path is None else None
    if release is not None:
        pair = wan_loader.expert_folders(release)
        if pair is None:
            raise AnimeVideoModelError(
                f"low_noise_name: '{os.path.basename(release.rstrip(os.sep))}' does not hold both experts (no "
                "high_noise_model/ + low_noise_model/ or transformer/ + transformer_2/); pick the low-noise "
                "expert's file as well.")
        high_noise_path, low_noise_path = pair
    dependencies.require("AniSora V2/V3 (Wan2.1)")
    experts = []
    for path in (high_noise_path, low_noise_path):
        compute, storage = wan_dtypes(dtype_name, device, path)
        with explain_load_errors(os.path.basename(path.rstrip("/")), path,
                                 needs=dict(dependencies.NEEDS["AniSora V2/V3 (Wan2.1)"])):
            experts.append(load_wan_transformer(path, compute, storage, layout=wan_loader.WAN22_I2V))
    high, low = experts
    high_name = os.path.basename(high_noise_path.rstrip("/"))
    low_name = os.path.basename(low_noise_path.rstrip("/"))
    wan_loader.check_expert_pair(high, low, high_name, low_name)
    if vae_path is None:  # the VAE a release folder ships (beside high_noise_model/ in Wan-AI's layout)
        home = release or (os.path.dirname(high_noise_path.rstrip("/")) if os.path.isdir(high_noise_path) else None)
        vae_path = folder_vae(home or high_noise_path, None)
    vae = load_wan_vae(vae_path, torch.float32)
    boundary = wan_loader.boundary_ratio(release) if release else wan_loader.WAN22_I2V_BOUNDARY
    return AniSoraModel("wan", high, vae, compute, f"{high_name} + {low_name}",
                        extras={"storage_dtype": storage, "vae_source": os.path.basename(vae_path.rstrip("/"))},
                        transformer_2=low, boundary_ratio=boundary)


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
