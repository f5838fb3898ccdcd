"""Lineart node: LVCD sketch hints from colour frames (informative-drawings generator) or from existing lineart.

The work happens in ``pipelines.lineart``; the generator is loaded here through the shared model cache.
"""
from __future__ import annotations

from ..pipelines.checkpoint_io import FileIdentity
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from ..pipelines.lineart import extract as la_extract
from ..pipelines.lineart import loader as la_loader
from . import comfy_bridge as bridge
from ..pipelines import memory
from .common import (DOWNLOAD_DEFAULT, DOWNLOAD_INPUT, ModelOnDevice, cached_model, check_clip_memory, clip_bytes,
                     input_copy_bytes, resolve_model_file, with_fetchable)

FOLDER = la_loader.FOLDER
CATEGORY = "AnimeVideo/LVCD"
MODES = ("extract", "already lineart")
POLARITIES = list(la_extract.POLARITIES)
MEMORY_ADVICE = "Convert fewer frames at once " + memory.CHUNK_ADVICE + "."


def lineart_names() -> list[str]:
    return with_fetchable(bridge.list_files(FOLDER, la_loader.LINEART_EXTENSIONS), FOLDER)


def missing_model_message(model_name: str) -> str:
    return (f"model_name: '{model_name}' was not found in models/{FOLDER} ({bridge.models_dir_hint(FOLDER)}). "
            f"{la_loader.EXPECTED} Or set mode to 'already lineart' for drawings that need no extraction.")


def resolve_lineart_path(model_name: str, download_if_missing: bool = False, fetch: bool = True) -> str | None:
    return resolve_model_file(model_name, FOLDER, "model_name", lambda: missing_model_message(model_name),
                              download_if_missing, fetch)


def load_lineart_cached(model_name: str, download_if_missing: bool = False):
    """The managed generator for ``model_name``, shared through the model cache and parked on the offload
    device."""
    path = resolve_lineart_path(model_name, download_if_missing)
    key = ("lineart", FileIdentity.of(path))
    return cached_model(key, lambda: la_loader.load_lineart_model(path).to(bridge.offload_device()), model_name, path)


class AnimeVideoLineart:
    DESCRIPTION = ("Makes LVCD sketch hints: white lines on black, 3 channels, 0..1, at the input size. 'extract' "
                   "runs the informative-drawings generator (ControlNet-1.1 lineart annotator, sk_model.pth, as LVCD "
                   "does) on colour frames; 'already lineart' only converts an existing line drawing (hand-drawn or "
                   "from another extractor) to greyscale and the right polarity.")

    @classmethod
    def INPUT_TYPES(cls):
        names = lineart_names()
        default = la_loader.DEFAULT_MODEL if la_loader.DEFAULT_MODEL in names else (names[0] if names else
                                                                                   la_loader.DEFAULT_MODEL)
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Colour frames to extract lineart from ('extract'), or line drawings "
                                    "to convert ('already lineart'): an IMAGE batch [frames, H, W, 3]. Any size."}),
                "model_name": (names, {"default": default, "tooltip": "The generator in models/lineart: "
                               "sk_model.pth (LVCD's choice) or sk_model2.pth (coarse lines), from "
                               "huggingface.co/lllyasviel/Annotators. Unused in 'already lineart' mode."}),
                "mode": (list(MODES), {"default": "extract", "tooltip": "extract: run the generator on colour "
                         "frames. already lineart: the input is a line drawing; only polarity and greyscale "
                         "conversion."}),
                "polarity": (POLARITIES, {"default": "auto", "tooltip": "'already lineart' only: what the drawing "
                             "is. auto inverts when the image is mostly light (mean > 0.5, dark lines on paper); "
                             "black_on_white always inverts; white_on_black keeps it. Ignored by 'extract'."}),
            },
            "optional": {
                "chunk_size": ("INT", {"default": 8, "min": 1, "max": 4096, "tooltip": "Frames run through the "
                               "generator at once ('extract'). Lower uses less memory; the result is the same."}),
                "download_if_missing": DOWNLOAD_INPUT,
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("lineart",)
    OUTPUT_TOOLTIPS = ("LVCD hints: IMAGE [frames, H, W, 3] float32 0..1, white lines (1) on black (0).",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, model_name, mode="extract", polarity="auto", download_if_missing=DOWNLOAD_DEFAULT):
        if mode not in MODES:
            return f"mode: '{mode}' is not one of {', '.join(MODES)}."
        if polarity not in POLARITIES:
            return f"polarity: '{polarity}' is not one of {', '.join(POLARITIES)}."
        if mode == "extract":
            try:
                resolve_lineart_path(model_name, download_if_missing, fetch=False)
            except (AnimeVideoModelError, AnimeVideoInputError) as e:
                return str(e)
        return True

    def run(self, image, model_name, mode="extract", polarity="auto", chunk_size=8,
            download_if_missing=DOWNLOAD_DEFAULT):
        if mode not in MODES:
            raise AnimeVideoInputError(f"mode: '{mode}' is not one of {', '.join(MODES)}.")
        n, h, w = (int(d) for d in image.shape[:3])
        check_clip_memory(f"lineart for {n} frames of {w}x{h}", clip_bytes(n, h, w),
                          clip_bytes(n, h, w) + input_copy_bytes(image), MEMORY_ADVICE)
        if mode == "already lineart":
            return (la_extract.to_hint(image, polarity),)
        model = load_lineart_cached(model_name, download_if_missing)
        n = int(image.shape[0]) if hasattr(image, "shape") and image.ndim == 4 else 1
        progress = bridge.Progress(max(1, n), desc="Lineart")
        try:
            with ModelOnDevice(model, False, 0, "lineart extraction", MEMORY_ADVICE) as m:
                out = la_extract.extract_lineart(m, image, chunk_size=int(chunk_size), device=bridge.torch_device(),
                                                 on_chunk=lambda done, total: progress.set(done),
                                                 check_interrupt=bridge.check_interrupt)
        finally:
            progress.close()
        return (out,)


NODE_CLASS_MAPPINGS = {"AnimeVideoLineart": AnimeVideoLineart}
NODE_DISPLAY_NAME_MAPPINGS = {"AnimeVideoLineart": "Lineart for LVCD (AnimeVideo)"}
