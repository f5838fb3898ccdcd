"""Load Stable Video Diffusion from its two released layouts.

(a) sgm single files (``svd.safetensors``, ``svd_xt.safetensors``, ``svd_xt_1_1.safetensors``, anime
    fine-tunes saved the same way): keys are mapped with the rule tables in :mod:`.keymap`;
(b) diffusers folders with ``unet/``, ``vae/`` and ``image_encoder/``.

Both give the same :class:`SVDModel`, so every sampler and node is layout-agnostic.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from .. import dtype_policy
from ..checkpoint_io import (empty_weights, is_safetensors, materialize, own_module_tensors, read_shapes,
                             read_state_dict, safetensors_variant, take_prefix)
from ..errors import AnimeVideoModelError
from .. import registry
from ..registry import Architecture, keys_only
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


def resolve_dtype(name: str, device: torch.device | str, file_dtype: torch.dtype | None = None) -> torch.dtype:
    """The pack's dtype policy for the SVD UNet (pipelines/dtype_policy.py): auto = fp16 on a GPU (or the file's
    half type), fp32 on the CPU; ComfyUI's --*-unet flags apply."""
    return dtype_policy.resolve_dtype(name, device, file_dtype=file_dtype, role="diffusion").compute


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    # The SVD VAE overflows in fp16 (diffusers' force_upcast=True), so it stays in fp32 then.
    return torch.float32 if dtype == torch.float16 else dtype


# ---------------------------------------------------------------------------------------------
# sgm single file
# ---------------------------------------------------------------------------------------------

def load_sgm_single_file(path: str, dtype: torch.dtype) -> SVDModel:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    name = os.path.basename(path)
    shapes = read_shapes(path)
    detect.require_svd(shapes, name)
    unet_shapes, vae_shapes, clip_shapes = detect.split_prefixes(shapes)
    unet_cfg = detect.detect_unet_config(unet_shapes)
    vae_cfg = detect.detect_vae_config(vae_shapes)
    clip_cfg = detect.detect_clip_config(clip_shapes)

    # a pickle is read once and its parts taken one by one; safetensors one tensor at a time
    src = path if is_safetensors(path) else read_state_dict(path)
    with empty_weights():
        unet = UNetSpatioTemporalConditionModel(**unet_cfg)
        vae = AutoencoderKLTemporalDecoder(**vae_cfg)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))

    lpb = unet_cfg["layers_per_block"]
    unet_sd = {keymap.unet_key_to_diffusers(k, lpb): v for k, v in take_prefix(src, keymap.UNET_PREFIX, dtype).items()}
    unet = materialize(unet, unet_sd, "UNet")
    del unet_sd
    vae_sd = keymap.vae_state_dict_to_diffusers(
        take_prefix(src, keymap.VAE_PREFIX, vae_dtype_for(dtype)), len(vae_cfg["block_out_channels"])
    )
    vae = materialize(vae, vae_sd, "VAE")
    clip_sd = keymap.clip_state_dict_to_transformers(take_prefix(src, keymap.CLIP_PREFIX, dtype))
    clip = materialize(clip, clip_sd, "image encoder")
    return SVDModel(unet=unet, vae=vae, image_encoder=clip, dtype=dtype, source=path, layout="sgm")


# ---------------------------------------------------------------------------------------------
# diffusers folder
# ---------------------------------------------------------------------------------------------



SVD_UNET_CLASS = "UNetSpatioTemporalConditionModel"


def is_diffusers_svd_folder(path: str) -> bool:
    """unet/ vae/ image_encoder/, with an SVD UNet where unet/config.json names its class (I2VGen-XL's folder has
    the same three sub-folders around an I2VGenXLUNet)."""
    if not all(os.path.isdir(os.path.join(path, sub)) for sub in ("unet", "vae", "image_encoder")):
        return False
    config = os.path.join(path, "unet", "config.json")
    if not os.path.isfile(config):
        return True
    try:
        with open(config, encoding="utf-8") as f:
            cls = json.load(f).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: the load itself says what is wrong
    return cls in (None, SVD_UNET_CLASS)


def load_diffusers_folder(path: str, dtype: torch.dtype) -> SVDModel:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    if not is_diffusers_svd_folder(path):
        if registry.identify(path) is not None:  # another model's folder: say which
            registry.require(path, "svd", expected=detect.SVD_EXPECTED)
        present = sorted(os.listdir(path)) if os.path.isdir(path) else []
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}' is not an SVD diffusers folder: it needs unet/, vae/ and image_encoder/ "
            f"(found: {', '.join(present) or 'nothing'})."
        )
    common = dict(local_files_only=True, use_safetensors=True)
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(
            path, subfolder="unet", torch_dtype=dtype,
            variant=safetensors_variant(os.path.join(path, "unet"), "diffusion_pytorch_model"), **common)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(
            path, subfolder="vae", torch_dtype=vae_dtype_for(dtype),
            variant=safetensors_variant(os.path.join(path, "vae"), "diffusion_pytorch_model"), **common)
        clip = CLIPVisionModelWithProjection.from_pretrained(
            os.path.join(path, "image_encoder"), dtype=dtype,
            variant=safetensors_variant(os.path.join(path, "image_encoder"), "model"), **common)
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


# ---------------------------------------------------------------------------------------------
# The parts alone (for the architecture registry): built from their shapes like the whole file
# ---------------------------------------------------------------------------------------------

def _part(source, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The part's tensors, ``prefix`` stripped when present (a part saved alone has bare sgm names)."""
    sd = read_state_dict(source) if isinstance(source, str) else dict(source)
    return {k[len(prefix):] if k.startswith(prefix) else k: v.to(dtype) for k, v in sd.items()}


def load_unet(source, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """An SVD UNet alone (sgm names): diffusers' ``UNetSpatioTemporalConditionModel`` sized from the shapes."""
    from diffusers import UNetSpatioTemporalConditionModel

    sd = _part(source, keymap.UNET_PREFIX, dtype)
    cfg = detect.detect_unet_config({k: tuple(v.shape) for k, v in sd.items()})
    with empty_weights():
        unet = UNetSpatioTemporalConditionModel(**cfg)
    unet = materialize(unet, {keymap.unet_key_to_diffusers(k, cfg["layers_per_block"]): v for k, v in sd.items()},
                       "UNet")
    match_sgm_norm_eps(unet)
    return unet


def load_vae(source, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """SVD's temporal VAE alone (sgm names): ``AutoencoderKLTemporalDecoder`` sized from the shapes."""
    from diffusers import AutoencoderKLTemporalDecoder

    sd = _part(source, keymap.VAE_PREFIX, dtype)
    cfg = detect.detect_vae_config({k: tuple(v.shape) for k, v in sd.items()})
    with empty_weights():
        vae = AutoencoderKLTemporalDecoder(**cfg)
    return materialize(vae, keymap.vae_state_dict_to_diffusers(sd, len(cfg["block_out_channels"])), "VAE")


def load_image_encoder(source, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """SVD's OpenCLIP ViT-H image encoder alone: transformers' ``CLIPVisionModelWithProjection``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    sd = _part(source, keymap.CLIP_PREFIX, dtype)
    cfg = detect.detect_clip_config({k: tuple(v.shape) for k, v in sd.items()})
    with empty_weights():
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    return materialize(clip, keymap.clip_state_dict_to_transformers(sd), "image encoder")


def _load_whole(source, dtype: torch.dtype = torch.float32) -> SVDModel:
    return load_svd(source, dtype)


ARCHITECTURES = (
    Architecture("svd", "a Stable Video Diffusion checkpoint", "svd", keys_only(detect.is_svd_bundle), _load_whole,
                 detect_folder=is_diffusers_svd_folder),
    Architecture("svd_unet", "an SVD UNet without its VAE and image encoder", "svd_unet",
                 keys_only(detect.is_svd_unet), load_unet),
    Architecture("svd_vae", "an SVD VAE (sgm layout, temporal decoder)", "svd_vae", keys_only(detect.is_svd_vae),
                 load_vae),
    Architecture("svd_image_encoder", "an SVD image encoder (OpenCLIP ViT-H visual tower)", "svd_image_encoder",
                 keys_only(detect.is_svd_image_encoder), load_image_encoder),
)
