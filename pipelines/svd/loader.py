"""Load Stable Video Diffusion from its two released layouts.

(a) sgm single files (``svd.safetensors``, ``svd_xt.safetensors``, ``svd_xt_1_1.safetensors``, anime
    fine-tunes saved the same way): keys are mapped with the rule tables in :mod:`.keymap`;
(b) diffusers folders with ``unet/``, ``vae/`` and ``image_encoder/``.

Both give the same :class:`SVDModel`, so every sampler and node is layout-agnostic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..checkpoint_io import (SAFETENSORS_EXTENSIONS, explain_load_errors, own_module_tensors, owned_tensors,
                             read_state_dict)
from ..errors import AnimeVideoModelError
from . import detect, keymap

VAE_SCALING_FACTOR = 0.18215


@dataclass(eq=False)
class SVDModel:
    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    dtype: torch.dtype
    source: str
    layout: str  # "sgm" or "diffusers"
    vae_scaling_factor: float = VAE_SCALING_FACTOR
    extras: dict = field(default_factory=dict)

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def modules_for_memory(self):
        return [self.unet, self.vae, self.image_encoder]

    def to(self, device) -> "SVDModel":
        for m in self.modules_for_memory():
            m.to(device)
        return self


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    device = torch.device(device)
    if name in (None, "", "auto"):
        return torch.float16 if device.type in ("cuda", "mps", "xpu") else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise AnimeVideoModelError(f"dtype: '{name}' is not one of auto, fp32, fp16, bf16.")
    return table[name]


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    # The SVD VAE overflows in fp16 (diffusers' force_upcast=True), so it stays in fp32 then.
    return torch.float32 if dtype == torch.float16 else dtype


# ---------------------------------------------------------------------------------------------
# sgm single file
# ---------------------------------------------------------------------------------------------

def _read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    if path.lower().endswith(SAFETENSORS_EXTENSIONS):
        from safetensors import safe_open

        with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


class _TensorSource:
    """Reads tensors one prefix at a time so peak RAM stays near one component, not the whole file."""

    def __init__(self, path: str):
        self.path = path
        self._sd = None if path.lower().endswith(SAFETENSORS_EXTENSIONS) else read_state_dict(path)

    def take(self, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        out = {}
        if self._sd is not None:
            for k in [k for k in self._sd if k.startswith(prefix)]:
                out[k[len(prefix):]] = self._sd.pop(k).to(dtype)
            return out
        from safetensors import safe_open

        with explain_load_errors(os.path.basename(self.path), self.path), safe_open(self.path, framework="pt") as f:
            for k in f.keys():
                if k.startswith(prefix):
                    out[k[len(prefix):]] = f.get_tensor(k).to(dtype)
        return owned_tensors(out)


def _materialize(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise AnimeVideoModelError(
            f"The {what} weights do not fit the detected architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            if name.endswith("position_ids"):  # a non-persistent index buffer in transformers' CLIP
                owner = model.get_submodule(name.rsplit(".", 1)[0])
                owner.register_buffer("position_ids", torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
            else:
                raise AnimeVideoModelError(f"The {what} has no value for buffer {name}.")
    return model.eval().requires_grad_(False)


def load_sgm_single_file(path: str, dtype: torch.dtype) -> SVDModel:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    name = os.path.basename(path)
    shapes = _read_shapes(path)
    detect.require_svd(list(shapes), name)
    unet_shapes, vae_shapes, clip_shapes = detect.split_prefixes(shapes)
    unet_cfg = detect.detect_unet_config(unet_shapes)
    vae_cfg = detect.detect_vae_config(vae_shapes)
    clip_cfg = detect.detect_clip_config(clip_shapes)

    src = _TensorSource(path)
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel(**unet_cfg)
        vae = AutoencoderKLTemporalDecoder(**vae_cfg)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))

    lpb = unet_cfg["layers_per_block"]
    unet_sd = {keymap.unet_key_to_diffusers(k, lpb): v for k, v in src.take(keymap.UNET_PREFIX, dtype).items()}
    unet = _materialize(unet, unet_sd, "UNet")
    del unet_sd
    vae_sd = keymap.vae_state_dict_to_diffusers(
        src.take(keymap.VAE_PREFIX, vae_dtype_for(dtype)), len(vae_cfg["block_out_channels"])
    )
    vae = _materialize(vae, vae_sd, "VAE")
    clip_sd = keymap.clip_state_dict_to_transformers(src.take(keymap.CLIP_PREFIX, dtype))
    clip = _materialize(clip, clip_sd, "image encoder")
    return SVDModel(unet=unet, vae=vae, image_encoder=clip, dtype=dtype, source=path, layout="sgm")


# ---------------------------------------------------------------------------------------------
# diffusers folder
# ---------------------------------------------------------------------------------------------

def _variant(folder: str, stem: str) -> str | None:
    files = os.listdir(folder) if os.path.isdir(folder) else []
    if f"{stem}.safetensors" in files:
        return None
    if f"{stem}.fp16.safetensors" in files:
        return "fp16"
    raise AnimeVideoModelError(
        f"'{folder}' has no {stem}.safetensors (or .fp16.safetensors). Only safetensors weights are loaded; "
        "download the folder's safetensors files."
    )


def is_diffusers_svd_folder(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, sub)) for sub in ("unet", "vae", "image_encoder"))


def load_diffusers_folder(path: str, dtype: torch.dtype) -> SVDModel:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    if not is_diffusers_svd_folder(path):
        present = sorted(os.listdir(path)) if os.path.isdir(path) else []
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is not an SVD diffusers folder: it needs unet/, vae/ and image_encoder/ "
            f"(found: {', '.join(present) or 'nothing'})."
        )
    common = dict(local_files_only=True, use_safetensors=True)
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(
            path, subfolder="unet", torch_dtype=dtype,
            variant=_variant(os.path.join(path, "unet"), "diffusion_pytorch_model"), **common)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(
            path, subfolder="vae", torch_dtype=vae_dtype_for(dtype),
            variant=_variant(os.path.join(path, "vae"), "diffusion_pytorch_model"), **common)
        clip = CLIPVisionModelWithProjection.from_pretrained(
            os.path.join(path, "image_encoder"), dtype=dtype,
            variant=_variant(os.path.join(path, "image_encoder"), "model"), **common)
    except AnimeVideoModelError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise AnimeVideoModelError(
            f"Could not load the diffusers folder '{os.path.basename(path)}': {type(e).__name__}: {e}"
        ) from None
    if type(unet).__name__ != "UNetSpatioTemporalConditionModel":
        raise AnimeVideoModelError(f"'{path}/unet' is a {type(unet).__name__}, not an SVD UNet.")
    for m in (unet, vae, clip):
        own_module_tensors(m).eval().requires_grad_(False)
    return SVDModel(unet=unet, vae=vae, image_encoder=clip, dtype=dtype, source=path, layout="diffusers")


# Stability's sgm code (which trained SVD, and LVCD on it) builds every ResBlock GroupNorm with eps 1e-5;
# diffusers' UNetSpatioTemporalConditionModel builds those of its CrossAttn down blocks and all up blocks with
# 1e-6 (a port difference: about 1e-4 on a float64 forward, found by the LVCD parity check against the original).
SGM_NORM_EPS = 1e-5


def match_sgm_norm_eps(module: torch.nn.Module) -> int:
    """Set the res-block GroupNorms of a diffusers SVD UNet (or a network built from its blocks) to sgm's eps.
    Returns how many were changed."""
    changed = 0
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.GroupNorm) and "resnets." in name and m.eps != SGM_NORM_EPS:
            m.eps = SGM_NORM_EPS
            changed += 1
    return changed


def load_svd(path: str, dtype: torch.dtype) -> SVDModel:
    model = load_diffusers_folder(path, dtype) if os.path.isdir(path) else load_sgm_single_file(path, dtype)
    match_sgm_norm_eps(model.unet)
    return model
