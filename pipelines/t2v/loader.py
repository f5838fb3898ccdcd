"""Load ModelScopeT2V (``damo-vilab/text-to-video-ms-1.7b``) and I2VGen-XL (``ali-vilab/i2vgen-xl``) from their
released diffusers folders.

What a folder is comes from its own files (unet/config.json's class and the component sub-folders), never from the
folder's name; sizes come from the configs and weights on disk. Only safetensors weights are read (the released
folders ship ``.safetensors`` and ``.fp16.safetensors`` next to the ``.bin`` pickles).

ModelScope's original single-file release (``text2video_pytorch_model.pth`` with ``VQGAN_autoencoder.pth`` and
``open_clip_pytorch_model.bin`` from the damo ModelScope repo) is not read: see the README's text-to-video section.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..checkpoint_io import own_module_tensors, safetensors_variant
from ..errors import AnimeVideoModelError

MODELSCOPE = "ModelScopeT2V"
I2VGENXL = "I2VGen-XL"
UNET_CLASSES = {"UNet3DConditionModel": MODELSCOPE, "I2VGenXLUNet": I2VGENXL}
COMPONENTS = {
    MODELSCOPE: ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    I2VGENXL: ("unet", "vae", "text_encoder", "tokenizer", "image_encoder", "feature_extractor", "scheduler"),
}
RELEASED = {MODELSCOPE: "damo-vilab/text-to-video-ms-1.7b", I2VGENXL: "ali-vilab/i2vgen-xl"}
# Schedulers a folder may name: diffusers' discrete-time ones (KarrasDiffusionSchedulers), built from the config.
SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
              "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
              "DEISMultistepScheduler", "UniPCMultistepScheduler")


@dataclass(eq=False)
class T2VModel:
    kind: str  # MODELSCOPE or I2VGENXL
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    dtype: torch.dtype
    source: str
    image_encoder: torch.nn.Module | None = None
    image_mean: tuple = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple = (0.26862954, 0.26130258, 0.27577711)
    clip_size: tuple = (224, 224)  # (width, height) of the image encoder's input
    extras: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def native_size(self) -> int:
        """The trained frame side in px (unet sample_size x the VAE factor): 256 for ModelScope."""
        return int(self.unet.config.sample_size or 32) * self.spatial_factor

    def modules_for_memory(self):
        return [m for m in (self.unet, self.vae, self.text_encoder, self.image_encoder) if m is not None]

    def to(self, device) -> "T2VModel":
        for m in self.modules_for_memory():
            m.to(device)
        return self


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def folder_kind(path: str) -> str | None:
    """MODELSCOPE, I2VGENXL or None, from unet/config.json's class and the sub-folders the pipeline needs."""
    cfg = _read_json(os.path.join(path, "unet", "config.json")) if os.path.isdir(path) else None
    kind = UNET_CLASSES.get((cfg or {}).get("_class_name"))
    if kind is None:
        return None
    return kind if all(os.path.isdir(os.path.join(path, sub)) for sub in COMPONENTS[kind]) else None


def is_modelscope_folder(path: str) -> bool:
    return folder_kind(path) == MODELSCOPE


def is_i2vgenxl_folder(path: str) -> bool:
    return folder_kind(path) == I2VGENXL


def describe_folder(path: str) -> str:
    """What a folder that is not the expected model looks like, for error messages."""
    if not os.path.isdir(path):
        return "it is not a folder"
    cfg = _read_json(os.path.join(path, "unet", "config.json"))
    index = _read_json(os.path.join(path, "model_index.json")) or {}
    present = sorted(os.listdir(path))
    if cfg and cfg.get("_class_name"):
        what = f"its unet is a {cfg['_class_name']}"
    elif index.get("_class_name"):
        what = f"its model_index.json names {index['_class_name']}"
    else:
        what = "it has no unet/config.json"
    return f"{what} (found: {', '.join(present) or 'nothing'})"


def require_kind(path: str, expected: str):
    kind = folder_kind(path)
    if kind == expected:
        return
    name = os.path.basename(os.path.normpath(path))
    if kind is not None:
        raise AnimeVideoModelError(
            f"'{name}' is a {kind} folder, not {expected}; load it with the {kind} loader, or pick a {expected} "
            f"folder ({RELEASED[expected]}).")
    missing = [sub for sub in COMPONENTS[expected] if not os.path.isdir(os.path.join(path, sub))]
    need = "/, ".join(COMPONENTS[expected]) + "/"
    extra = f"; missing: {', '.join(missing)}" if missing and os.path.isdir(path) else ""
    raise AnimeVideoModelError(
        f"'{name}' is not a {expected} diffusers folder: {describe_folder(path)}. It needs {need} as in "
        f"{RELEASED[expected]}{extra}.")




def vae_dtype_for(vae_config: dict, dtype: torch.dtype) -> torch.dtype:
    # SD's VAE overflows in fp16 (its config says force_upcast), so it stays in fp32 then
    return torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast", True) else dtype


def check_widths(kind: str, unet, text_encoder, image_encoder, vae, name: str):
    """The components must fit each other (a text encoder from another model is the usual mix-up)."""
    cross = unet.config.cross_attention_dim
    pairs = [("text_encoder hidden size", text_encoder.config.hidden_size, "unet cross_attention_dim", cross),
             ("vae latent_channels", vae.config.latent_channels, "unet in_channels", unet.config.in_channels)]
    if image_encoder is not None:
        pairs.append(("image_encoder projection_dim", image_encoder.config.projection_dim,
                      "unet cross_attention_dim", cross))
    for a_name, a, b_name, b in pairs:
        if a != b:
            raise AnimeVideoModelError(
                f"'{name}': the {a_name} is {a} but the {b_name} is {b}; the folder mixes components of different "
                f"models. A {kind} folder ({RELEASED[kind]}) has matching ones.")


def read_scheduler_config(path: str) -> dict:
    cfg = _read_json(os.path.join(path, "scheduler", "scheduler_config.json"))
    if cfg is None:
        raise AnimeVideoModelError(f"'{os.path.basename(path)}' has no readable scheduler/scheduler_config.json.")
    if cfg.get("_class_name") not in SCHEDULERS:
        raise AnimeVideoModelError(
            f"'{os.path.basename(path)}': scheduler/scheduler_config.json names {cfg.get('_class_name')!r}; "
            f"one of {', '.join(SCHEDULERS)} is needed.")
    return cfg


def load_folder(path: str, dtype: torch.dtype, expected: str) -> T2VModel:
    """A released ModelScopeT2V or I2VGen-XL diffusers folder as a T2VModel (eval mode, no grad)."""
    from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    require_kind(path, expected)
    name = os.path.basename(os.path.normpath(path))
    scheduler_config = read_scheduler_config(path)
    common = dict(local_files_only=True, use_safetensors=True)
    unet_cls = UNet3DConditionModel if expected == MODELSCOPE else I2VGenXLUNet
    image_encoder, extras = None, {}
    try:
        unet = unet_cls.from_pretrained(path, subfolder="unet", torch_dtype=dtype,
                                        variant=safetensors_variant(os.path.join(path, "unet"), "diffusion_pytorch_model"),
                                        **common)
        vae_cfg = AutoencoderKL.load_config(os.path.join(path, "vae"))
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae",
                                            torch_dtype=vae_dtype_for(vae_cfg, dtype),
                                            variant=safetensors_variant(os.path.join(path, "vae"), "diffusion_pytorch_model"),
                                            **common)
        text_encoder = CLIPTextModel.from_pretrained(
            os.path.join(path, "text_encoder"), dtype=dtype,
            variant=safetensors_variant(os.path.join(path, "text_encoder"), "model"), **common)
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True)
        if expected == I2VGENXL:
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                os.path.join(path, "image_encoder"), dtype=dtype,
                variant=safetensors_variant(os.path.join(path, "image_encoder"), "model"), **common)
            fe = _read_json(os.path.join(path, "feature_extractor", "preprocessor_config.json")) or {}
            crop = fe.get("crop_size") or {}
            extras = dict(image_mean=tuple(fe.get("image_mean", T2VModel.image_mean)),
                          image_std=tuple(fe.get("image_std", T2VModel.image_std)),
                          clip_size=(int(crop.get("width", 224)), int(crop.get("height", 224))))
    except AnimeVideoModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise AnimeVideoModelError(f"Could not load the {expected} folder '{name}': {type(e).__name__}: {e}") from None
    check_widths(expected, unet, text_encoder, image_encoder, vae, name)
    for m in (unet, vae, text_encoder, image_encoder):
        if m is not None:
            own_module_tensors(m).eval().requires_grad_(False)
    return T2VModel(kind=expected, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                    scheduler_config=scheduler_config, dtype=dtype, source=path, image_encoder=image_encoder,
                    **extras)


def load_modelscope(path: str, dtype: torch.dtype) -> T2VModel:
    return load_folder(path, dtype, MODELSCOPE)


def load_i2vgenxl(path: str, dtype: torch.dtype) -> T2VModel:
    return load_folder(path, dtype, I2VGENXL)


def _architectures():
    from ..registry import Architecture

    never_a_file = lambda keys, shapes: False  # noqa: E731  (released as diffusers folders only)
    return tuple(
        Architecture(kind_id, f"a {kind} diffusers folder", kind_id, never_a_file,
                     (lambda kind: lambda path, dtype=torch.float32: load_folder(path, dtype, kind))(kind),
                     hint=f"load it with AnimeVideo Load {'ModelScopeT2V' if kind == MODELSCOPE else 'I2VGen-XL'}",
                     detect_folder=(lambda kind: lambda path: folder_kind(path) == kind)(kind))
        for kind_id, kind in (("modelscope_t2v", MODELSCOPE), ("i2vgenxl", I2VGENXL)))


ARCHITECTURES = _architectures()
