"""Small pieces every node module shares: model files by name, the loader-node factory, model placement for one
run (ComfyUI-managed inside ComfyUI) and model-input validation."""
from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

from ..pipelines import memory, model_downloads
from ..pipelines.checkpoint_io import explain_load_errors, resolve_in_folders
from ..pipelines.errors import AnimeVideoInputError, AnimeVideoMemoryError, AnimeVideoModelError
from ..pipelines.model_cache import MODEL_CACHE, ModelRef, model_nbytes
from . import comfy_bridge as bridge

log = logging.getLogger("AnimeVideo")

# On by default, as comfyui_controlnet_aux and Kijai's wrappers fetch their models on first use: the input is on
# the node for everyone to see, only pinned files with a published size/sha256 are fetched, and
# ANIMEVIDEO_DOWNLOADS=0 (or HF_HUB_OFFLINE=1) turns it off for a whole server.
DOWNLOAD_DEFAULT = True
DOWNLOAD_INPUT = ("BOOLEAN", {
    "default": DOWNLOAD_DEFAULT,
    "tooltip": "When the selected file is missing and it is one of the pack's pinned Hugging Face files (see the "
               "README's Model downloads), download it into the model folder first: size and sha256 checked, "
               "progress on this node, Cancel stops it and the next run resumes. Off: a missing file is an error. "
               "ANIMEVIDEO_DOWNLOADS=0 or HF_HUB_OFFLINE=1 turns downloads off for the whole server."})


def fetchable_entry(kind: str, name: str):
    """The pinned download for this folder kind and exact file name, when it has a size or sha256 to check."""
    entry = model_downloads.find_pinned(kind, name) if isinstance(name, str) else None
    return entry if entry is not None and (entry.sha256 or entry.size) else None


def with_fetchable(names: list[str], kind: str) -> list[str]:
    """A model list plus the pinned files of ``kind`` that are not there yet, while downloads are allowed: a fresh
    install's loader offers what it can fetch (picking one downloads it on the first run)."""
    if model_downloads.downloads_disabled_reason() is not None:
        return names
    extra = [n for n in model_downloads.pinned_names(kind) if n not in names and fetchable_entry(kind, n)]
    return names + extra


def download_folder(kind: str) -> str:
    folders = bridge.model_folders(kind)
    if not folders:
        raise AnimeVideoModelError(f"No ComfyUI model folder '{kind}' is configured to download into.")
    return folders[0]


def can_fetch(kind: str, name: str, download_if_missing: bool) -> bool:
    return (bool(download_if_missing) and fetchable_entry(kind, name) is not None
            and model_downloads.downloads_disabled_reason() is None)


def explain_missing(message: str, kind: str, name: str, download_if_missing: bool) -> str:
    """``message`` plus how this file can be downloaded, when the pack pins it."""
    entry = fetchable_entry(kind, name)
    if entry is None:
        return message
    hand = model_downloads.by_hand(entry, download_folder(kind))
    if not download_if_missing:
        return (f"{message} Turn on download_if_missing to fetch it from {entry.url} ({entry.describe_size()})"
                f"{model_downloads.gated_hint(entry)}. Or: {hand}")
    reason = model_downloads.downloads_disabled_reason()
    return f"{message} It could be downloaded, but {reason}. {hand}" if reason else message


def fetch_model(kind: str, name: str) -> str:
    """Download the pinned file for ``name`` into the first ``kind`` folder, with progress on the node's bar
    (Cancel stops it between chunks; the partial file stays for the next run to resume)."""
    entry = fetchable_entry(kind, name)
    dest = download_folder(kind)
    log.info("AnimeVideo: downloading %s from %s into %s", name, entry.url, dest)
    progress = bridge.Progress(entry.size or 1, desc=f"Download {name}")

    def on_bytes(done: int, total: int | None):
        if total:
            progress.total = max(1, int(total))
        progress.set(done)  # also raises on Cancel

    try:
        os.makedirs(dest, exist_ok=True)
        return model_downloads.download_pinned(entry, dest, on_bytes=on_bytes)
    finally:
        progress.close()


def resolve_model_file(name: str, kind: str, input_name: str, missing: Callable[[], str],
                       download_if_missing: bool = False, fetch: bool = True) -> str | None:
    """``name`` inside ComfyUI's ``kind`` model folders (never outside them). When it is not there and
    ``download_if_missing`` allows a pinned download, it is fetched (``fetch``; VALIDATE_INPUTS passes False and
    gets None); otherwise an AnimeVideoModelError with ``missing()`` (the input, the folders and what belongs
    there) plus how to download it where the pack pins the file."""
    try:
        return resolve_in_folders(name, bridge.model_folders(kind), input_name)
    except FileNotFoundError:
        pass
    if can_fetch(kind, name, download_if_missing):
        return fetch_model(kind, name) if fetch else None
    raise AnimeVideoModelError(explain_missing(missing(), kind, name, download_if_missing))


# ---------------------------------------------------------------------------------------------
# Loaded models: one cache, ComfyUI-managed, placed per run
# ---------------------------------------------------------------------------------------------

def cached_model(key, load: Callable[[], object], shown_name: str, path: str | None):
    """The managed model for ``key`` from the one model cache (loaded by ``load`` on a miss and wrapped by the
    bridge: a core ModelPatcher inside ComfyUI). Out of memory, a package too old or a damaged file: each said as
    what it is, naming ``shown_name``."""
    with explain_load_errors(shown_name, path):
        return MODEL_CACHE.get_or_load(key, lambda: bridge.manage(load()))


def cached_model_ref(key, load: Callable[[], object], shown_name: str, path: str | None) -> ModelRef:
    """Like :func:`cached_model`, as the releasable reference a loader node outputs (see ModelHandle)."""
    with explain_load_errors(shown_name, path):
        return MODEL_CACHE.ref(key, lambda: bridge.manage(load()))


class ModelHandle:
    """What flows along a loader node's wire: the shared model plus this loader's ``keep_on_gpu``.

    Built from a ModelRef (the loader nodes) it holds nothing after ComfyUI's Unload Models and loads the model
    again on the next run; built from a model (tests, scripts) it holds that model."""

    def __init__(self, model=None, keep_on_gpu: bool = False, ref: ModelRef | None = None):
        self._model, self.ref, self.keep_on_gpu = model, ref, bool(keep_on_gpu)

    @property
    def managed(self):
        """The managed model (loaded again if Unload Models released it)."""
        if self.ref is not None:
            return self.ref.get()
        return None if self._model is None else bridge.as_managed(self._model)

    @property
    def model(self):
        """The pack's model (SVDModel, LVCDModel, AniSoraModel, Upscaler, AnimeInterp, GANimeModel ...)."""
        if self.ref is not None:
            return self.ref.get().pack_model
        return self._model


def run_advice(advice: str) -> str:
    """A node's memory advice plus, inside ComfyUI, the server flags that stream weights layer by layer."""
    if bridge.IN_COMFYUI:
        return f"{advice} {memory.LOWVRAM_ADVICE}"
    return advice


class ModelOnDevice:
    """Puts a loaded model on the compute device for one run and, unless ``keep_on_gpu``, sends it back to the
    offload device afterwards; the block gets the pack's model.

    Inside ComfyUI this is core's ``load_models_gpu`` with ``working_bytes`` (the run's own memory beyond the
    weights) as memory_required: core evicts its models (or ours) to make room, and under --lowvram / a small card
    loads only part of the weights. ``model``: a managed model (ModelHandle.managed, cached_model) or a bare pack
    model. An allocation failure inside the block becomes AnimeVideoMemoryError with ``advice`` (when given).
    """

    def __init__(self, model, keep_on_gpu: bool, working_bytes: int = 0, what: str = "this run",
                 advice: str | None = None):
        self.managed = bridge.as_managed(model)
        self.keep, self.working = keep_on_gpu, int(working_bytes)
        self.what, self.advice = what, advice

    @property
    def model(self):
        return self.managed.pack_model

    def __enter__(self):
        with memory.allocation_guard(f"loading the model for {self.what}",
                                     model_nbytes(self.managed) + self.working, run_advice(self.advice or "")):
            self.managed.load_for_run(self.working)
        return self.managed.pack_model

    def __exit__(self, exc_type, exc, tb):
        self.managed.after_run(self.keep)
        if self.advice is not None and exc is not None and memory.is_allocation_failure(exc) \
                and not isinstance(exc, AnimeVideoMemoryError):
            raise memory.out_of_memory_error(self.what, self.working, exc, run_advice(self.advice)) from None
        return False


def diffusion_working_bytes(frames: int, latent_h: int, latent_w: int, width: int, dtype_bytes: int,
                            batch: int = 1, factor: int = 16) -> int:
    """A rough bound of a video diffusion model's activations for one step: ``factor`` feature maps of ``width``
    channels over every latent pixel of every frame, for ``batch`` (2 with classifier-free guidance). It only sizes
    the room core makes before the run (load_models_gpu's memory_required); nothing is refused by it."""
    return int(frames) * int(latent_h) * int(latent_w) * int(width) * int(dtype_bytes) * int(batch) * int(factor)


# ---------------------------------------------------------------------------------------------
# The loader-node factory
# ---------------------------------------------------------------------------------------------

KEEP_ON_GPU_TOOLTIP = ("Keep the model on the GPU between runs (faster re-runs, holds VRAM until ComfyUI needs "
                       "the room). Off: it waits on the CPU.")


def keep_on_gpu_input(tooltip: str = KEEP_ON_GPU_TOOLTIP):
    return ("BOOLEAN", {"default": False, "tooltip": tooltip})


@dataclass
class LoaderSpec:
    """One loader node. ``model_inputs()``: the required inputs naming the files, in widget order (the dtype input
    follows them); ``open(**inputs)``: resolve the files and return ``(key, load, shown_name, path)`` for the model
    cache (``load()`` builds the pack model, parked on the offload device); ``checks(**inputs)``: the
    VALIDATE_INPUTS checks after the dtype's (each a callable raising the pack's errors); ``handle(ref,
    keep_on_gpu, inputs)``: what the output wire carries (default ModelHandle)."""

    node_id: str
    description: str
    model_inputs: Callable[[], dict]
    dtypes: list
    dtype_tooltip: str
    return_type: str
    return_name: str
    output_tooltip: str
    category: str
    open: Callable[..., tuple]
    checks: Callable[..., list] = lambda **inputs: []
    keep_on_gpu_tooltip: str = KEEP_ON_GPU_TOOLTIP
    download: bool = True  # the download_if_missing input (pinned files)
    requires: str | None = None  # pipelines.dependencies.require(...) before validating and loading
    handle: Callable | None = None


def _signature(names: list[str], defaults: dict, first: str) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(first, kind)]
    params += [inspect.Parameter(n, kind, default=defaults[n]) if n in defaults else inspect.Parameter(n, kind)
               for n in names]
    return inspect.Signature(params)


def make_loader_node(spec: LoaderSpec):
    """A loader node class from ``spec``: inputs = spec's file inputs, dtype, then optional keep_on_gpu and (when
    ``spec.download``) download_if_missing; VALIDATE_INPUTS takes the file inputs, dtype (and
    download_if_missing), as ComfyUI then leaves their values to it (a pinned file not downloaded yet is valid);
    ``load`` resolves the files, shares the model through the model cache (a core ModelPatcher inside ComfyUI)
    and returns ``spec.handle(ref, keep_on_gpu, inputs)``."""
    from ..pipelines import dependencies

    file_names = list(spec.model_inputs().keys())
    defaults = {"dtype": "auto", "keep_on_gpu": False, "download_if_missing": DOWNLOAD_DEFAULT}
    validate_names = file_names + ["dtype"] + (["download_if_missing"] if spec.download else [])
    load_names = file_names + ["dtype", "keep_on_gpu"] + (["download_if_missing"] if spec.download else [])
    validate_sig = _signature(validate_names, defaults, "cls")
    load_sig = _signature(load_names, defaults, "self")
    make_handle = spec.handle or (lambda ref, keep_on_gpu, inputs: ModelHandle(keep_on_gpu=keep_on_gpu, ref=ref))

    def INPUT_TYPES(cls):
        optional = {"keep_on_gpu": keep_on_gpu_input(spec.keep_on_gpu_tooltip)}
        if spec.download:
            optional["download_if_missing"] = DOWNLOAD_INPUT
        return {"required": {**spec.model_inputs(),
                             "dtype": (list(spec.dtypes), {"default": "auto", "tooltip": spec.dtype_tooltip})},
                "optional": optional}

    def VALIDATE_INPUTS(cls, *args, **kwargs):
        bound = validate_sig.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        inputs = dict(bound.arguments)
        inputs.pop("cls")
        dtype = inputs.pop("dtype")
        checks = list(spec.checks(**inputs))
        if spec.requires:
            checks.append(lambda: dependencies.require(spec.requires))
        return validate_model_inputs(dtype, spec.dtypes, *checks)

    VALIDATE_INPUTS.__signature__ = validate_sig

    def load(self, *args, **kwargs):
        bound = load_sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        inputs = dict(bound.arguments)
        inputs.pop("self")
        if inputs["dtype"] not in spec.dtypes:
            raise AnimeVideoInputError(f"dtype: '{inputs['dtype']}' is not one of {', '.join(spec.dtypes)}.")
        if spec.requires:
            dependencies.require(spec.requires)
        keep_on_gpu = bool(inputs.pop("keep_on_gpu"))
        key, build, shown_name, path = spec.open(**inputs)
        return (make_handle(cached_model_ref(key, build, shown_name, path), keep_on_gpu, inputs),)

    load.__signature__ = load_sig

    return type(spec.node_id, (), {
        "DESCRIPTION": spec.description,
        "INPUT_TYPES": classmethod(INPUT_TYPES),
        "VALIDATE_INPUTS": classmethod(VALIDATE_INPUTS),
        "RETURN_TYPES": (spec.return_type,),
        "RETURN_NAMES": (spec.return_name,),
        "OUTPUT_TOOLTIPS": (spec.output_tooltip,),
        "FUNCTION": "load",
        "CATEGORY": spec.category,
        "load": load,
        "loader_spec": spec,
    })


def check_clip_memory(what: str, result_bytes: int, working_bytes: int, advice: str):
    """Refuse, before any work, a node run whose clip (plus its working memory) does not fit the available RAM;
    the AnimeVideoMemoryError names the size and ``advice`` says what to change."""
    memory.check_fits(what, result_bytes, working_bytes, bridge.available_ram_bytes(), advice)


def clip_bytes(frames: int, height: int, width: int, channels: int = 3) -> int:
    """An IMAGE batch in float32, as the nodes return it."""
    return int(frames) * int(height) * int(width) * int(channels) * 4


def input_copy_bytes(image) -> int:
    """The float32 copy a node makes of an IMAGE that is not float32 already (fp16 intermediates)."""
    if isinstance(image, torch.Tensor) and image.dtype != torch.float32:
        return image.numel() * 4
    return 0


def validate_model_inputs(dtype: str, dtypes, *checks: Callable[[], object]):
    """For VALIDATE_INPUTS: True, or the message of the first failing check (dtype first)."""
    if dtype not in dtypes:
        return f"dtype: '{dtype}' is not one of {', '.join(dtypes)}."
    for check in checks:
        try:
            check()
        except (AnimeVideoModelError, AnimeVideoInputError) as e:
            return str(e)
    return True


# ---------------------------------------------------------------------------------------------
# Input checks every node gets (installed once over NODE_CLASS_MAPPINGS in nodes/__init__.py)
# ---------------------------------------------------------------------------------------------

# ComfyUI checks a FLOAT widget against min/max, which NaN passes (every comparison with it is false), and the API
# can send any tensor down an IMAGE/MASK wire; these checks turn such values into errors that name the input.
CHECKED_TYPES = ("FLOAT", "IMAGE", "MASK")


def check_float(name: str, value, opts: dict):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        span = ""
        if "min" in opts and "max" in opts:
            span = f" from {opts['min']:g} to {opts['max']:g}"
        raise AnimeVideoInputError(f"{name}: {value!r} is not a finite number; give a number{span}.")


def check_image(name: str, value):
    if not isinstance(value, torch.Tensor):
        raise AnimeVideoInputError(f"{name}: expected an IMAGE tensor [frames, height, width, channels], got "
                                   f"{type(value).__name__}.")
    if value.ndim != 4 or value.shape[-1] not in (1, 3, 4):
        raise AnimeVideoInputError(f"{name}: expected an IMAGE [frames, height, width, channels] with 1, 3 or 4 "
                                   f"channels, got shape {tuple(value.shape)}.")
    if value.shape[0] < 1 or value.shape[1] < 1 or value.shape[2] < 1:
        raise AnimeVideoInputError(f"{name}: the IMAGE {tuple(value.shape)} is empty; give at least one frame of "
                                   "at least 1x1 px.")
    if not value.is_floating_point():
        raise AnimeVideoInputError(f"{name}: got {value.dtype} values; an IMAGE holds floats in 0..1 (float32, "
                                   "float16 or bfloat16).")


def check_mask(name: str, value):
    if not isinstance(value, torch.Tensor):
        raise AnimeVideoInputError(f"{name}: expected a MASK tensor [frames, height, width] or [height, width], "
                                   f"got {type(value).__name__}.")
    if value.ndim not in (2, 3) or value.numel() == 0:
        raise AnimeVideoInputError(f"{name}: expected a non-empty MASK [frames, height, width] or [height, width], "
                                   f"got shape {tuple(value.shape)}.")
    if not value.is_floating_point():
        raise AnimeVideoInputError(f"{name}: got {value.dtype} values; a MASK holds floats in 0..1.")


def _checked_specs(cls) -> dict:
    types_ = cls.INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, spec in types_.get(section, {}).items():
            if isinstance(spec[0], str) and spec[0] in CHECKED_TYPES:
                out[name] = (spec[0], spec[1] if len(spec) > 1 else {})
    return out


def check_inputs(specs: dict, values: dict):
    for name, (kind, opts) in specs.items():
        if name not in values or values[name] is None:
            continue
        if kind == "FLOAT":
            check_float(name, values[name], opts)
        elif kind == "IMAGE":
            check_image(name, values[name])
        else:
            check_mask(name, values[name])


def guard_inputs(cls):
    """Wrap ``cls``'s FUNCTION so its FLOAT, IMAGE and MASK inputs are checked (finite numbers; tensors of the
    right rank, not empty, floating point in any precision) before the node runs."""
    method = getattr(cls, cls.FUNCTION)
    if getattr(method, "_animevideo_guarded", False):
        return cls
    signature = inspect.signature(method)
    specs = []  # filled on the first call: INPUT_TYPES lists model folders, not needed at import

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not specs:
            specs.append(_checked_specs(cls))
        bound = signature.bind_partial(self, *args, **kwargs)
        check_inputs(specs[0], bound.arguments)
        return method(self, *args, **kwargs)

    run._animevideo_guarded = True
    setattr(cls, cls.FUNCTION, run)
    return cls
