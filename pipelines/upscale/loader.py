"""Load an upscaler file: AnimeSR (our module) or any single-image model spandrel detects.

The architecture comes from the state dict, never from the file name: AnimeSR is recognised by its
``recurrent_cell.*`` keys and its sizes are read from the shapes; everything else goes to spandrel's
``ModelLoader().load_from_state_dict`` (Real-ESRGAN Compact such as ``realesr-animevideov3``, RRDB such as
``RealESRGAN_x4plus_anime_6B``, Real-CUGAN, ...). Files are read by :func:`checkpoint_io.read_state_dict`
(safetensors, or pickles through ``torch.load(weights_only=True)``), so loading never runs code.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from .. import dependencies, dtype_policy, registry
from ..checkpoint_io import read_state_dict, strip_common_prefix
from ..errors import AnimeVideoInputError, AnimeVideoModelError
from . import animesr

log = logging.getLogger("AnimeVideo")

UPSCALER_EXTENSIONS = (".pth", ".pt", ".safetensors", ".sft", ".ckpt", ".bin")
DTYPES = ("auto", "fp32", "fp16", "bf16")
_DTYPE_TABLE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

EXPECTED_UPSCALERS = (
    "Expected an upscaler in models/upscale_models: AnimeSR_v2.pth or AnimeSR_v1-PaperModel.pth (AnimeSR, from "
    "github.com/TencentARC/AnimeSR, also huggingface.co/kadirnar/AnimeSR_v2), realesr-animevideov3.pth or "
    "RealESRGAN_x4plus_anime_6B.pth (Real-ESRGAN, from github.com/xinntao/Real-ESRGAN/releases), or any other "
    "single-image model that spandrel loads (ESRGAN, Compact, Real-CUGAN, SwinIR, ...)."
)

KIND_ANIMESR = "animesr"
KIND_SPANDREL = "spandrel"
UPSCALER_KINDS = ("animesr", "upscaler")  # registry kinds this loader takes


@dataclass(eq=False)
class Upscaler:
    """A loaded upscaler, whichever its kind. ``model`` is the torch module (for placement and memory)."""

    kind: str  # "animesr" (recurrent, ours) or "spandrel" (single image)
    model: torch.nn.Module
    scale: int
    arch_name: str
    source: str
    dtype: torch.dtype
    descriptor: object | None = None  # spandrel's ImageModelDescriptor for the "spandrel" kind
    size_multiple: int = 1  # frame sides the model needs a multiple of (we pad and crop back)
    can_tile: bool = True
    details: dict = field(default_factory=dict)

    @property
    def recurrent(self) -> bool:
        return self.kind == KIND_ANIMESR

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "Upscaler":
        if self.descriptor is not None:
            self.descriptor.to(device)
        else:
            self.model.to(device)
        return self

    def modules_for_memory(self):
        return [self.model]

    def run_image(self, x: torch.Tensor) -> torch.Tensor:
        """A single-image model on [b, 3, h, w] in its dtype -> [b, 3, h*s, w*s] clamped to 0..1 (spandrel's call:
        it pads to the model's size requirements itself and crops back)."""
        return self.descriptor(x)

    def describe(self) -> str:
        return f"{self.arch_name} x{self.scale} ({self.source}, {str(self.dtype).replace('torch.', '')})"


def resolve_dtype(name: str, device, supports_half: bool = True, supports_bf16: bool = True) -> torch.dtype:
    """The pack's dtype policy (pipelines/dtype_policy.py) for an upscaler: auto = fp16 on a GPU (bf16 where the
    model lacks fp16 support, else fp32), fp32 on the CPU. fp16/bf16 asked for on a CPU device run in fp32:
    half-precision convolutions on a CPU are slower than fp32 and are not what the models were checked with."""
    if name not in (None, "") and name not in DTYPES:
        raise AnimeVideoInputError(f"dtype: '{name}' is not one of {', '.join(DTYPES)}.")
    choice = dtype_policy.resolve_dtype(name, device, supports_half=supports_half, supports_bf16=supports_bf16,
                                        half_on_cpu=False)
    if name not in (None, "", "auto") and choice.compute != _DTYPE_TABLE[name]:
        log.info("AnimeVideo upscaler: %s", choice.reason)
    return choice.compute


def describe_state_dict(sd: dict) -> str:
    """What a non-upscaler state dict is, for error messages (the architecture registry's words)."""
    arch = registry.identify(sd)
    if arch is None and any(k.startswith("recurrent_cell.") for k in sd):
        return "an incomplete AnimeSR state dict (recurrent_cell.* without its first or last conv)"
    return registry.describe(sd)


def not_an_upscaler_message(name: str, sd: dict, detail: str = "") -> str:
    return registry.wrong_file_message(name, describe_state_dict(sd), UPSCALER_KINDS, EXPECTED_UPSCALERS, detail)


def load_state_dict_upscaler(sd: dict, name: str, dtype_name: str = "auto", device="cpu") -> Upscaler:
    """Detect and build from an already read state dict (see :func:`load_upscaler`)."""
    sd = strip_common_prefix(sd)
    arch = registry.identify(sd)
    if arch is not None and arch.kind not in (*UPSCALER_KINDS, "foreign"):  # another of the pack's models
        raise AnimeVideoModelError(not_an_upscaler_message(name, sd))
    if arch is not None and arch.kind == KIND_ANIMESR:
        dtype = resolve_dtype(dtype_name, device)
        model = animesr.build_from_state_dict(sd, dtype)
        cfg = model.config
        return Upscaler(KIND_ANIMESR, model, cfg.netscale, "AnimeSR", name, dtype, size_multiple=animesr.MOD,
                        details={"num_feat": cfg.num_feat, "num_block": cfg.num_block})
    if dependencies.installed_version("spandrel") is not None:
        dependencies.require("Upscale (spandrel models)")
    try:
        import spandrel
    except ImportError:
        raise AnimeVideoModelError(
            f"'{name}' is not AnimeSR, and loading other upscalers needs the package 'spandrel' "
            "(it comes with ComfyUI; else pip install spandrel).") from None
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise AnimeVideoModelError(not_an_upscaler_message(name, sd)) from None
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError) as e:
        raise AnimeVideoModelError(
            f"'{name}': spandrel recognised the keys but could not build the model ({type(e).__name__}: {e}). "
            "The file may be damaged or a variant spandrel does not know.") from None
    arch = desc.architecture.name
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise AnimeVideoModelError(not_an_upscaler_message(
            name, sd, f"; spandrel detected {arch} ({desc.purpose}), which takes more than an image"))
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise AnimeVideoModelError(
            f"'{name}' is {arch} with {desc.input_channels} input and {desc.output_channels} output channels; "
            "only RGB to RGB models are supported here.")
    dtype = resolve_dtype(dtype_name, device, desc.supports_half, desc.supports_bfloat16)
    desc.to(dtype).eval()
    desc.model.requires_grad_(False)
    tiling = getattr(getattr(desc, "tiling", None), "name", "SUPPORTED")
    return Upscaler(KIND_SPANDREL, desc.model, int(desc.scale), arch, name, dtype, descriptor=desc,
                    size_multiple=max(1, int(desc.size_requirements.multiple_of)),
                    can_tile=tiling != "INTERNAL", details={"purpose": desc.purpose, "tiling": tiling})


def load_upscaler(path: str, dtype_name: str = "auto", device="cpu") -> Upscaler:
    """Read ``path`` and build its upscaler on the CPU. ``device`` is where it will run (it decides ``auto``)."""
    name = os.path.basename(path)
    sd = read_state_dict(path)
    return load_state_dict_upscaler(sd, name, dtype_name, device)


def _load_entry(source, dtype_name: str = "auto", device="cpu", name: str | None = None) -> Upscaler:
    if isinstance(source, str):
        return load_upscaler(source, dtype_name, device)
    return load_state_dict_upscaler(source, name or "state dict", dtype_name, device)


ARCHITECTURES = (
    registry.Architecture("animesr", "an AnimeSR model (recurrent video upscaler)", KIND_ANIMESR,
                          registry.keys_only(animesr.is_animesr_state_dict), _load_entry, takes_state_dict=True),
)
