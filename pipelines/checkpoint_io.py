"""Reading checkpoint files safely.

safetensors is preferred; pickled formats (.ckpt/.pth/.pt/.bin) are read only through
``torch.load(weights_only=True)`` so a checkpoint can never run code. Names that come from node
inputs are resolved strictly inside the given model folders.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import AnimeVideoInputError, AnimeVideoModelError

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")


def resolve_in_folders(name: str, folders: Iterable[str], input_name: str = "ckpt_name") -> str:
    """Return the real path of ``name`` inside one of ``folders``.

    Absolute paths, ``..`` components and symlink escapes are refused: a node input must never
    reach files outside the model folders.
    """
    folders = [f for f in folders if f]
    if not isinstance(name, str) or not name.strip():
        raise AnimeVideoInputError(f"{input_name}: no model name given.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):  # NUL and other control characters (possible via the API)
        raise AnimeVideoInputError(
            f"{input_name}: {name!r} contains control characters (e.g. NUL), which no file name has; pick a file "
            "from the list.")
    norm = name.replace("\\", "/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if os.path.isabs(name) or norm.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise AnimeVideoInputError(
            f"{input_name}: '{name}' is not allowed; give a name relative to the model folder "
            f"(one of: {', '.join(folders) or 'none configured'})."
        )
    for folder in folders:
        root = os.path.realpath(folder)
        candidate = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([root, candidate]) != root:
            continue  # a symlink pointing outside the folder
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(name)


@dataclass(frozen=True)
class FileIdentity:
    """What makes two loads 'the same file' for the model cache."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileIdentity":
        real = os.path.realpath(path)
        if os.path.isdir(real):
            # A diffusers folder: the identity is that of every weight file inside it.
            size, mtime = 0, 0
            for dirpath, _, files in os.walk(real):
                for f in sorted(files):
                    st = os.stat(os.path.join(dirpath, f))
                    size += st.st_size
                    mtime = max(mtime, st.st_mtime_ns)
            return cls(real, size, mtime)
        st = os.stat(real)
        return cls(real, st.st_size, st.st_mtime_ns)


# The CPU allocator's alignment: fresh tensors start on 64-byte boundaries.
CPU_ALIGNMENT = 64


def owned_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` in an aligned allocation of its own.

    safetensors (0.8 and later) serves tensors straight from the memory-mapped file, at whatever offset the
    header leaves, and CPU kernels take other code paths (other rounding, ~1e-6) on unaligned weights: the
    same weights would compute differently depending on the file's layout (an sgm file vs a diffusers
    folder). One copy of each unaligned tensor at load makes every load path compute the same."""
    if t.device.type == "cpu" and t.data_ptr() % CPU_ALIGNMENT:
        return t.clone()
    return t


def own_module_tensors(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter and buffer of ``module`` in aligned memory of its own (see owned_tensor): for modules
    from diffusers' / transformers' ``from_pretrained``, which keep safetensors' memory-mapped tensors."""
    for sub in module.modules():
        for group in (sub._parameters, sub._buffers):
            for name, t in group.items():
                if t is not None:
                    t.data = owned_tensor(t.data)
    return module


def read_state_dict(path: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load every tensor of a checkpoint file. Lightning-style ``{"state_dict": …}`` wrappers are unwrapped."""
    lower = path.lower()
    name = os.path.basename(path)
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        from safetensors.torch import load_file

        try:
            return {k: owned_tensor(v) for k, v in load_file(path, device=device).items()}
        except Exception as e:  # SafetensorError, OSError: truncated or corrupt
            raise AnimeVideoModelError(damaged_file_message(name, e)) from None
    if lower.endswith(PICKLE_EXTENSIONS):
        try:
            obj = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" in str(e) or "Unsupported global" in str(e):  # a class or function reference
                raise AnimeVideoModelError(
                    f"'{name}' holds Python objects besides tensors, which could run code when loaded; it is "
                    "refused (only plain tensors are read). Convert it to .safetensors or use the released file."
                ) from None
            raise AnimeVideoModelError(damaged_file_message(name, e)) from None
        except Exception as e:  # zip/pickle stream errors of truncated, corrupt or non-checkpoint files
            raise AnimeVideoModelError(damaged_file_message(name, e)) from None
        return unwrap_state_dict(obj)
    raise AnimeVideoModelError(
        f"'{os.path.basename(path)}' has an unsupported extension; expected one of "
        f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}."
    )


def damaged_file_message(name: str, e: Exception) -> str:
    return (f"Could not read '{name}': the file is damaged or incomplete (often an interrupted download; "
            f"download it again). Details: {type(e).__name__}: {e}")


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    # Training frameworks nest the weights (Lightning, BasicSR, plain PyTorch scripts), sometimes twice.
    wrappers = ("state_dict", "params_ema", "params-ema", "params", "model_state_dict", "model", "net")
    for _ in range(2):
        for wrapper in wrappers:
            if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise AnimeVideoModelError("The checkpoint does not contain a state dict of tensors.")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
