"""The only module that touches ``comfy.*`` and ``folder_paths``.

Progress bar, interrupt, devices, model folders and memory, each with a plain fallback so the nodes
also run in scripts and tests without ComfyUI (tqdm, ``ANIMEVIDEO_MODELS_DIR``, CPU).
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from ..pipelines import memory
from ..pipelines.model_cache import MODEL_CACHE

log = logging.getLogger("AnimeVideo")

try:  # inside a ComfyUI server
    import comfy.model_management as _mm
    import comfy.utils as _cu
    import folder_paths as _fp

    IN_COMFYUI = True
except ImportError:  # scripts, tests, CI
    _mm = _cu = _fp = None
    IN_COMFYUI = False

# Our own model folders under ComfyUI's models/ (registered so extra_model_paths.yaml can add more).
PACK_FOLDERS = {
    "lvcd": (".safetensors", ".ckpt", ".pth", ".pt", ".sft"),
    "ganime": (".safetensors", ".ckpt", ".pth", ".pt", ".sft"),
    "lineart": (".safetensors", ".ckpt", ".pth", ".pt", ".sft"),
    "interpolation": (".safetensors", ".ckpt", ".pth", ".pt", ".sft"),
    "metrics": (".safetensors", ".ckpt", ".pth", ".pt", ".sft", ".bin"),
    "streaming_t2v": (".ckpt", ".safetensors", ".pth", ".pt", ".sft"),
}


class AnimeVideoInterrupted(Exception):
    """Raised outside ComfyUI when :func:`request_interrupt` was called (ComfyUI raises its own)."""


_interrupt = threading.Event()


def request_interrupt():
    if IN_COMFYUI:
        _mm.interrupt_current_processing(True)
    else:
        _interrupt.set()


def check_interrupt():
    """Stop promptly: call between steps and chunks."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()
    elif _interrupt.is_set():
        _interrupt.clear()
        raise AnimeVideoInterrupted("interrupted")


# ---------------------------------------------------------------------------------------------
# Devices and memory
# ---------------------------------------------------------------------------------------------

def torch_device() -> torch.device:
    if IN_COMFYUI:
        return _mm.get_torch_device()
    forced = os.environ.get("ANIMEVIDEO_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    if IN_COMFYUI:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where core keeps latents between nodes (its EmptyLatent / WanImageToVideo put them there)."""
    if IN_COMFYUI:
        return _mm.intermediate_device()
    return torch.device("cpu")


def make_room(nbytes: int, device: torch.device):
    """Ask ComfyUI to evict its own models so ours fit on ``device``."""
    if IN_COMFYUI and device.type != "cpu":
        _mm.free_memory(nbytes, device)


def empty_cache():
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def available_ram_bytes() -> int | None:
    """RAM a new allocation can take now (ComfyUI's own figure inside ComfyUI, /proc/meminfo outside), capped by
    ANIMEVIDEO_MAX_RAM_GB; None when unknown."""
    available = None
    if IN_COMFYUI:
        try:
            available = int(_mm.get_free_memory(torch.device("cpu")))
        except Exception:  # an older or patched model_management: the plain figure
            available = None
    if available is None:
        available = memory.system_available_bytes()
    return memory.apply_limit(available)


def release_models_with(model_management) -> None:
    """Make ComfyUI's "unload all models" (``POST /free``, the Unload Models button) release ours too.

    Only needed when ``ANIMEVIDEO_CACHE_BUDGET_GB`` lets our cache hold models; the call-through wrapper
    is installed once and leaves ComfyUI's own behaviour unchanged.
    """
    original = model_management.unload_all_models
    if getattr(original, "_animevideo_wrapped", False):
        return

    def unload_all_models(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            MODEL_CACHE.release_all()

    unload_all_models._animevideo_wrapped = True
    model_management.unload_all_models = unload_all_models


if IN_COMFYUI:
    if os.environ.get("ANIMEVIDEO_CACHE_BUDGET_GB") in (None, ""):
        # ComfyUI's output cache holds loaded models; POST /free drops it and so releases ours too.
        MODEL_CACHE.set_budget(0)
    else:
        release_models_with(_mm)


# ---------------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------------

def _fallback_models_dir() -> str:
    return os.environ.get("ANIMEVIDEO_MODELS_DIR", os.path.join(os.getcwd(), "models"))


def register_pack_folders():
    if not IN_COMFYUI:
        return
    for name, exts in PACK_FOLDERS.items():
        if name not in _fp.folder_names_and_paths:
            _fp.folder_names_and_paths[name] = ([os.path.join(_fp.models_dir, name)], set(exts))


def model_folders(kind: str) -> list[str]:
    if IN_COMFYUI:
        try:
            return list(_fp.get_folder_paths(kind))
        except KeyError:
            return []
    return [os.path.join(_fallback_models_dir(), kind)]


def list_files(kind: str, extensions: tuple[str, ...]) -> list[str]:
    if IN_COMFYUI:
        try:
            return [f for f in _fp.get_filename_list(kind) if f.lower().endswith(extensions)]
        except KeyError:
            return []
    out = []
    for folder in model_folders(kind):
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if f.lower().endswith(extensions):
                    out.append(os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/"))
    return sorted(out)


def list_dirs(kind: str, is_model_dir) -> list[str]:
    """Sub-folders (one level) of a model folder kind that ``is_model_dir`` accepts (diffusers layouts)."""
    out = []
    for folder in model_folders(kind):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if is_model_dir(os.path.join(folder, name)):
                out.append(name)
    return out


def input_directory() -> str | None:
    """ComfyUI's input/ folder (where Load Image looks); None outside ComfyUI."""
    return _fp.get_input_directory() if IN_COMFYUI else None


def data_folders() -> dict[str, str]:
    """ComfyUI's input and output folders (where node inputs may read clip sets), or
    ``ANIMEVIDEO_INPUT_DIR`` / ``ANIMEVIDEO_OUTPUT_DIR`` (default ./input, ./output) outside ComfyUI."""
    if IN_COMFYUI:
        return {"input": _fp.get_input_directory(), "output": _fp.get_output_directory()}
    return {"input": os.environ.get("ANIMEVIDEO_INPUT_DIR", os.path.join(os.getcwd(), "input")),
            "output": os.environ.get("ANIMEVIDEO_OUTPUT_DIR", os.path.join(os.getcwd(), "output"))}


def models_dir_hint(kind: str) -> str:
    folders = model_folders(kind)
    return ", ".join(folders) if folders else f"models/{kind}"


# ---------------------------------------------------------------------------------------------
# Progress and previews
# ---------------------------------------------------------------------------------------------

PREVIEW_SIZE = 512  # outside ComfyUI (inside: its --preview-size)


def previews_enabled() -> bool:
    """ComfyUI's preview method (the --preview-method flag, or the frontend's per-prompt setting, which ComfyUI
    writes into the same place before each prompt) is not 'none'. Outside ComfyUI: on."""
    if not IN_COMFYUI:
        return True
    try:
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return True
    return args.preview_method != LatentPreviewMethod.NoPreviews


def preview_size() -> int:
    if IN_COMFYUI:
        try:
            from comfy.cli_args import args

            return int(args.preview_size)
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
    return PREVIEW_SIZE


class Progress:
    """ComfyUI's progress bar (which also raises on interrupt), or tqdm outside ComfyUI."""

    def __init__(self, total: int, desc: str = "AnimeVideo"):
        self.total = max(1, int(total))
        self.value = 0
        if IN_COMFYUI:
            self._bar = _cu.ProgressBar(self.total)
            self._tqdm = None
        else:
            self._bar = None
            try:
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=self.total, desc=desc, leave=False,
                                  disable=os.environ.get("ANIMEVIDEO_QUIET") == "1")
            except ImportError:
                self._tqdm = None

    def update(self, n: int = 1, preview_rgb: torch.Tensor | None = None):
        """``preview_rgb``: optional [h, w, 3] uint8 shown on the node while it runs."""
        self.set(self.value + n, preview_rgb)

    def set(self, value: int, preview_rgb: torch.Tensor | None = None):
        n = min(self.total, int(value)) - self.value
        self.value += n
        if self._bar is not None:
            preview = None
            if preview_rgb is not None:
                from PIL import Image

                preview = ("JPEG", Image.fromarray(preview_rgb.cpu().numpy()), preview_size())
            self._bar.update_absolute(self.value, self.total, preview)
        elif self._tqdm is not None and n > 0:
            self._tqdm.update(n)
        check_interrupt()

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
