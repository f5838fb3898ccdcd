"""One dtype policy for every loader: what ``dtype=auto`` (or an explicit choice) means on a device.

- ``auto`` keeps the file's storage dtype when it is a half or fp8 type the device can compute with: a bf16 file
  stays bf16 on a GPU, an fp8 file stays fp8 in memory (weights upcast per layer to a compute dtype) where the
  model supports fp8 storage. Otherwise it picks by device and free memory: fp32 on a CPU (half-precision kernels
  there are slow and not what the models were checked with), the model's half type on a GPU, and fp8 storage
  when even that half would not fit the free memory and the model supports fp8.
- ComfyUI's dtype flags (``--fp16-unet``, ``--bf16-vae``, ``--fp32-vae``, …) override ``auto`` for their role
  through :func:`set_flag_overrides`, which the bridge sets inside ComfyUI; outside ComfyUI no flag applies.
- An explicit name is honoured, except half types on a CPU for models that ask for fp32 there
  (``half_on_cpu=False``) and types the model does not support (refused, naming what it supports).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import AnimeVideoInputError

DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2")
BY_NAME = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
           "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
HALF = (torch.float16, torch.bfloat16)
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
GPU_TYPES = ("cuda", "mps", "xpu")
# Part of the free memory a model's weights may take under auto (the rest: activations, other models).
WEIGHTS_SHARE_OF_FREE = 0.8

# The roles ComfyUI's flags address: --*-unet (the denoiser: UNet or video transformer), --*-vae,
# --*-text-enc (text and image encoders); "other" (upscalers, interpolators, metrics nets) has no flag.
ROLES = ("diffusion", "vae", "text_encoder", "other")


@dataclass(frozen=True)
class DtypeChoice:
    """``compute``: the dtype the math runs in; ``storage``: the dtype the weights are kept in (an fp8 type for
    fp8 storage, else the same as compute); ``reason``: why, for the run's info."""

    compute: torch.dtype
    storage: torch.dtype
    reason: str

    @property
    def fp8_storage(self) -> bool:
        return self.storage in FP8


FlagOverrides = Callable[[str, torch.device], "torch.dtype | None"]


def _no_flags(role: str, device: torch.device) -> torch.dtype | None:
    return None


_flag_overrides: FlagOverrides = _no_flags


def set_flag_overrides(fn: FlagOverrides | None) -> FlagOverrides:
    """Install ``fn(role, device) -> dtype or None`` (the dtype a command-line flag forces for a role, e.g.
    ComfyUI's ``--bf16-vae`` gives bfloat16 for "vae"); None restores the plain default (no flags). Returns the
    previous function, so a caller can put it back."""
    global _flag_overrides
    previous = _flag_overrides
    _flag_overrides = fn or _no_flags
    return previous


def flag_override(role: str, device) -> torch.dtype | None:
    return _flag_overrides(role, torch.device(device))


def is_gpu(device: torch.device) -> bool:
    return device.type in GPU_TYPES


def device_supports(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` computes in ``dtype`` (fp8 never: it is a storage type, upcast per layer)."""
    if dtype == torch.float32:
        return True
    if dtype in FP8:
        return False
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return is_gpu(device) or device.type == "cpu"


def _name_of(dtype: torch.dtype) -> str:
    return next((n for n, d in BY_NAME.items() if d == dtype), str(dtype).replace("torch.", ""))


def resolve_dtype(name: str | None, device, *, file_dtype: torch.dtype | None = None, supports_half: bool = True,
                  supports_bf16: bool = True, supports_fp8: bool = False, weights_nbytes: int | None = None,
                  free_bytes: int | None = None, role: str = "other", half: torch.dtype = torch.float16,
                  half_on_cpu: bool = True, auto_half: bool = True, input_name: str = "dtype") -> DtypeChoice:
    """The dtype for a model on ``device``.

    ``file_dtype``: the weights' dtype in the file (checkpoint_io.storage_dtype), if known; ``supports_*``: what
    the model runs correctly in (fp8: the loader can keep fp8 weights and upcast per layer); ``weights_nbytes``
    (the weights' size at ``file_dtype``, else at fp32) and ``free_bytes`` (free memory on ``device``) let
    ``auto`` fall back to fp8 storage when the half type would not fit; ``role``: which ComfyUI dtype flag
    applies; ``half``: the model's preferred half type; ``half_on_cpu=False``: fp16/bf16 asked for on a CPU run
    in fp32; ``auto_half=False``: ``auto`` is fp32 everywhere (models whose released numerics need it).
    """
    device = torch.device(device)
    name = "auto" if name in (None, "") else name
    if name not in DTYPE_NAMES:
        raise AnimeVideoInputError(f"{input_name}: '{name}' is not one of {', '.join(DTYPE_NAMES)}.")
    gpu = is_gpu(device)
    halves = [d for d in (half, *HALF) if (d != torch.bfloat16 or supports_bf16) and (d != torch.float16 or supports_half)]
    half_ok = next((d for d in halves if device_supports(device, d)), None)
    fp8_compute = half_ok if gpu and half_ok is not None else torch.float32

    if name != "auto":
        dtype = BY_NAME[name]
        if dtype in FP8:
            if not supports_fp8:
                raise AnimeVideoInputError(f"{input_name}: this model does not support {name} storage; use auto, "
                                           "fp32, fp16 or bf16.")
            return DtypeChoice(fp8_compute, dtype, f"{name} storage asked for, computing in {_name_of(fp8_compute)}")
        if (dtype == torch.float16 and not supports_half) or (dtype == torch.bfloat16 and not supports_bf16):
            raise AnimeVideoInputError(f"{input_name}: this model does not support {name}; use auto or fp32.")
        if dtype in HALF and not gpu and not half_on_cpu:
            return DtypeChoice(torch.float32, torch.float32, f"{name} asked for; on {device.type} it runs in fp32")
        return DtypeChoice(dtype, dtype, f"{name} asked for")

    forced = flag_override(role, device)
    if forced is not None and ((forced in FP8 and not supports_fp8) or (forced == torch.float16 and not supports_half)
                               or (forced == torch.bfloat16 and not supports_bf16)):
        forced = None  # a flag for a type this model cannot hold: auto decides, as for models core cannot cast
    if forced in HALF and not gpu and not half_on_cpu:
        forced = torch.float32
    if forced is not None:
        if forced in FP8:
            return DtypeChoice(fp8_compute, forced, f"{_name_of(forced)} storage forced by a command-line flag")
        return DtypeChoice(forced, forced, f"{_name_of(forced)} forced by a command-line flag")
    if file_dtype in FP8 and supports_fp8:
        return DtypeChoice(fp8_compute, file_dtype, f"auto: the file's {_name_of(file_dtype)} kept as storage")
    if not gpu or not auto_half or half_ok is None:
        why = "on the CPU" if not gpu else ("for this model" if not auto_half else "on this device")
        return DtypeChoice(torch.float32, torch.float32, f"auto: fp32 {why}")
    chosen = file_dtype if file_dtype in halves and device_supports(device, file_dtype) else half_ok
    reason = f"auto: the file's {_name_of(chosen)} kept" if chosen == file_dtype else f"auto: {_name_of(chosen)} on GPU"
    if weights_nbytes is not None and free_bytes is not None and supports_fp8:
        per_element = (file_dtype.itemsize if file_dtype is not None else 4)
        need = weights_nbytes // per_element * chosen.itemsize
        if need > WEIGHTS_SHARE_OF_FREE * free_bytes:
            return DtypeChoice(chosen, torch.float8_e4m3fn,
                               f"auto: {_name_of(chosen)} weights ({need / 2 ** 30:.1f} GB) would not fit the free "
                               f"memory ({free_bytes / 2 ** 30:.1f} GB), so they are kept in fp8_e4m3fn")
    return DtypeChoice(chosen, chosen, reason)
