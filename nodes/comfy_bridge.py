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


# ComfyUI's dtype flags (comfy/cli_args.py), per role of pipelines/dtype_policy.py; they apply where the user
# left dtype on auto, as core's own loaders do. --cpu-vae runs core's VAE on the CPU, where it computes in fp32.
COMFY_DTYPE_FLAGS = {
    "diffusion": (("fp32_unet", torch.float32), ("bf16_unet", torch.bfloat16), ("fp16_unet", torch.float16),
                  ("fp8_e4m3fn_unet", torch.float8_e4m3fn), ("fp8_e5m2_unet", torch.float8_e5m2)),
    "vae": (("fp16_vae", torch.float16), ("bf16_vae", torch.bfloat16), ("fp32_vae", torch.float32),
            ("cpu_vae", torch.float32)),
    "text_encoder": (("fp8_e4m3fn_text_enc", torch.float8_e4m3fn), ("fp8_e5m2_text_enc", torch.float8_e5m2),
                     ("fp16_text_enc", torch.float16), ("bf16_text_enc", torch.bfloat16),
                     ("fp32_text_enc", torch.float32)),
}


def comfy_flag_overrides(args):
    """``fn(role, device) -> dtype or None`` for dtype_policy.set_flag_overrides, from ComfyUI's parsed
    arguments (``comfy.cli_args.args``): the first flag set for the role, in core's order of precedence."""
    def override(role: str, device: torch.device):
        for flag, dtype in COMFY_DTYPE_FLAGS.get(role, ()):
            if getattr(args, flag, False):
                return dtype
        return None
    return override


def install_dtype_flags(args=None):
    """Make ComfyUI's dtype flags apply to the pack's ``auto`` dtypes (inside ComfyUI; ``args`` for tests)."""
    from ..pipelines import dtype_policy

    if args is None:
        from comfy.cli_args import args
    return dtype_policy.set_flag_overrides(comfy_flag_overrides(args))


if IN_COMFYUI:
    install_dtype_flags()


def offload_device() -> torch.device:
    if IN_COMFYUI:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where core keeps latents between nodes (its EmptyLatent / WanImageToVideo put them there)."""
    if IN_COMFYUI:
        return _mm.intermediate_device()
    return torch.device("cpu")


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


# ---------------------------------------------------------------------------------------------
# Managed models: inside ComfyUI every model the pack loads is a core ModelPatcher
# ---------------------------------------------------------------------------------------------

# torch layers swapped for core's comfy.ops classes (subclasses of the same torch classes, identical forward while
# their weights sit on the device; under partial loading core sets comfy_cast_weights and each call casts its weight
# to the input's device and dtype). Only these exact classes: a subclass may have its own forward.
COMFY_OPS_LAYERS = {
    torch.nn.Linear: "Linear", torch.nn.Conv1d: "Conv1d", torch.nn.Conv2d: "Conv2d", torch.nn.Conv3d: "Conv3d",
    torch.nn.ConvTranspose1d: "ConvTranspose1d", torch.nn.ConvTranspose2d: "ConvTranspose2d",
    torch.nn.GroupNorm: "GroupNorm", torch.nn.LayerNorm: "LayerNorm",
}


def model_parts(pack_model) -> list[torch.nn.Module]:
    """The torch modules of a pack model (a bundle's ``modules_for_memory()``, or the module itself), each once."""
    parts = pack_model.modules_for_memory() if hasattr(pack_model, "modules_for_memory") else [pack_model]
    out, seen = [], set()
    for m in parts:
        if isinstance(m, torch.nn.Module) and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def use_comfy_ops(module: torch.nn.Module, ops=None) -> int:
    """Give ``module``'s Linear/Conv/Norm layers core's comfy.ops classes in place (``__class__``), so core's
    partial loading (--lowvram, --novram, --reserve-vram, a card too small for the whole model) can leave their
    weights on the offload device and cast them per layer. Returns how many layers were swapped."""
    if ops is None:
        import comfy.ops

        ops = comfy.ops.disable_weight_init
    swapped = 0
    for m in module.modules():
        name = COMFY_OPS_LAYERS.get(type(m))
        if name is not None:
            m.__class__ = getattr(ops, name)
            swapped += 1
    return swapped


class PlainManaged:
    """Outside ComfyUI: the pack model, moved to the compute device for a run and back to the offload device
    afterwards (unless ``keep_on_gpu``)."""

    def __init__(self, pack_model):
        self.pack_model = pack_model

    def modules_for_memory(self):
        return model_parts(self.pack_model)

    def load_for_run(self, working_bytes: int = 0):
        device = torch_device()
        if self.pack_model.device != device:
            self.pack_model.to(device)

    def after_run(self, keep_on_gpu: bool):
        if not keep_on_gpu:
            off = offload_device()
            if self.pack_model.device != off:
                self.pack_model.to(off)
                empty_cache()

    def release(self):
        pass


class _PackModules(torch.nn.Module):
    """A pack model's torch modules as one module, what core's ModelPatcher patches (it walks named_modules, moves
    them and keeps its bookkeeping, e.g. ``device``, on this module)."""

    def __init__(self, parts, dtype):
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)
        self._animevideo_dtype = dtype

    def get_dtype(self):
        return self._animevideo_dtype


_patcher_class = None


def _managed_patcher_class():
    """core's ModelPatcher plus the pack's run calls (defined on first use: comfy.model_patcher is only importable
    inside ComfyUI)."""
    global _patcher_class
    if _patcher_class is not None:
        return _patcher_class
    import comfy.model_patcher as mp

    class AnimeVideoModelPatcher(mp.ModelPatcher):
        """A pack model managed by ComfyUI: in ``current_loaded_models`` with its true size while loaded, so core
        evicts it when it needs room, evicts core's models to fit it, partially loads it under --lowvram and
        unloads it on Unload Models."""

        def __init__(self, pack_model, load_device, offload_device, size):
            parts = model_parts(pack_model)
            dtype = getattr(pack_model, "dtype", None)
            if not isinstance(dtype, torch.dtype):
                dtype = next((p.dtype for m in parts for p in m.parameters()), None)
            super().__init__(_PackModules(parts, dtype), load_device, offload_device, size=size)
            self.pack_model = pack_model

        def modules_for_memory(self):
            return list(self.model.parts)

        def clone(self):
            raise NotImplementedError("AnimeVideo's managed models are shared as they are, not cloned.")

        def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
            super().load(device_to, lowvram_model_memory=lowvram_model_memory,
                         force_patch_weights=force_patch_weights, full_load=full_load)
            if device_to is not None and self.model.model_lowvram:
                self.model.model_loaded_weight_memory += self._place_what_cannot_be_cast(device_to)

        def _place_what_cannot_be_cast(self, device) -> int:
            """Core's partial load may leave any module's weights on the offload device, but only comfy.ops
            layers cast them per call: every other module's own weights and buffers go to ``device``, and so does
            the first layer of each part (the pipelines read the compute device from a part's first weight)."""
            moved = 0
            for i, part in enumerate(self.model.parts):
                first = True
                for name, m in part.named_modules():
                    own = [(k, t) for k, t in list(m._parameters.items()) + list(m._buffers.items()) if t is not None]
                    if not own:
                        continue
                    castable = hasattr(m, "comfy_cast_weights")
                    if (first or not castable) and any(t.device != device for _, t in own):
                        prefix = f"parts.{i}.{name}." if name else f"parts.{i}."
                        for k, t in own:
                            if k in m._parameters:
                                self.unpin_weight(prefix + k)
                                m._parameters[k] = torch.nn.Parameter(t.data.to(device), requires_grad=t.requires_grad)
                            else:
                                m._buffers[k] = t.to(device)
                            moved += t.numel() * t.element_size()
                        if castable:
                            mp.wipe_lowvram_weight(m)
                        m.comfy_patched_weights = True
                    first = False
            return moved

        def load_for_run(self, working_bytes: int = 0):
            _mm.load_models_gpu([self], memory_required=int(working_bytes))

        def after_run(self, keep_on_gpu: bool):
            # keep_on_gpu: core's own behaviour (stays loaded until core needs the room). Off: back to the offload
            # device now, as the pack's loaders promise; with one device for both there is nothing to move.
            if not keep_on_gpu and self.load_device != self.offload_device:
                unload_from_core(self)

        def release(self):
            unload_from_core(self)

    _patcher_class = AnimeVideoModelPatcher
    return _patcher_class


def manage(pack_model, compute_dtype: torch.dtype | None = None):
    """What the model cache holds for a loaded pack model: inside ComfyUI a core ModelPatcher (load device =
    ComfyUI's torch device, offload device = its unet offload device, size = the model's bytes) whose layers are
    core's comfy.ops classes; outside ComfyUI a PlainManaged. Both expose ``pack_model``, ``load_for_run``,
    ``after_run`` and ``release``.

    ``compute_dtype``: for weights stored in another dtype than they compute in (fp8 files): the layers then
    are core's manual_cast classes, which cast every call (and core counts that cast in its partial-load plan)."""
    if not IN_COMFYUI:
        return PlainManaged(pack_model)
    import comfy.ops

    from ..pipelines.model_cache import model_nbytes

    ops = comfy.ops.manual_cast if compute_dtype is not None else comfy.ops.disable_weight_init
    for part in model_parts(pack_model):
        use_comfy_ops(part, ops)
    cls = _managed_patcher_class()
    patcher = cls(pack_model, _mm.get_torch_device(), _mm.unet_offload_device(), model_nbytes(pack_model))
    if compute_dtype is not None:
        patcher.model.manual_cast_dtype = compute_dtype
    return patcher


def as_managed(model):
    """A managed model as it is; a bare pack model (tests, scripts) wrapped for one run."""
    return model if hasattr(model, "load_for_run") else PlainManaged(model)


def unload_from_core(patcher) -> bool:
    """Take ``patcher`` out of ComfyUI's loaded models the way core's free_memory does (weights to the offload
    device). False when it was not loaded."""
    if not IN_COMFYUI:
        return False
    for loaded in list(_mm.current_loaded_models):
        if loaded.model is patcher:
            loaded.model_unload()
            _mm.current_loaded_models.remove(loaded)
            return True
    return False


def is_loaded_in_core(managed) -> bool:
    return IN_COMFYUI and any(m is managed for m in _mm.loaded_models())


def release_models_with(model_management) -> None:
    """Make ComfyUI's "unload all models" (``POST /free`` with ``unload_models``: the Unload Models button)
    release ours completely. Core's unload takes our patchers off the device (they are in its loaded list); then
    the model cache makes every loader output (ModelRef) let go of its model, so the weights leave the RAM too
    and the next run loads them again. Installed once; ComfyUI's own behaviour is unchanged."""
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
        # the loader outputs (ModelRefs in ComfyUI's output cache) keep models alive, not the cache
        MODEL_CACHE.set_budget(0)
    MODEL_CACHE.on_release = lambda managed: managed.release() if hasattr(managed, "release") else None
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
