"""Reading checkpoint files safely.

safetensors is preferred; pickled formats (.ckpt/.pth/.pt/.bin) are read only through
``torch.load(weights_only=True)`` so a checkpoint can never run code. Names that come from node
inputs are resolved strictly inside the given model folders.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import struct
import sys
import zipfile
from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import AnimeVideoDependencyError, AnimeVideoInputError, AnimeVideoMemoryError, AnimeVideoModelError

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")


def _pickle_safe_globals() -> list:
    import argparse

    # DeepSpeed/SAT checkpoints carry their run's argparse.Namespace next to the weights: a plain attribute
    # container, so it is allowed; any other Python object is still refused by weights_only.
    return [argparse.Namespace]


PICKLE_SAFE_GLOBALS = _pickle_safe_globals()


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


def _unaligned(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.data_ptr() % CPU_ALIGNMENT != 0


def _pooled_copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of ``tensors`` in ONE aligned allocation. Thousands of separate copies would land in malloc's
    heap, which it seldom gives back to the system once freed (POST /free left a third of an SVD's copy in the
    RSS); one large block is mapped on its own and returned whole when the model goes."""
    offsets, total = [], 0
    for t in tensors:
        total = -(-total // CPU_ALIGNMENT) * CPU_ALIGNMENT
        offsets.append(total)
        total += t.numel() * t.element_size()
    pool = torch.empty(total, dtype=torch.uint8)
    out = []
    for t, offset in zip(tensors, offsets):
        view = pool[offset:offset + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        view.copy_(t)
        out.append(view)
    return out


def owned_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with its unaligned CPU tensors copied to aligned memory.

    safetensors (0.8 and later) serves tensors straight from the memory-mapped file, at whatever offset the
    header leaves, and CPU kernels take other code paths (other rounding, ~1e-6) on unaligned weights: the
    same weights would compute differently depending on the file's layout (an sgm file vs a diffusers
    folder). One copy of each unaligned tensor at load makes every load path compute the same. The copies
    share one allocation (see _pooled_copies): save them with ``.clone()`` if a file format needs separate
    storages."""
    keys = [k for k, t in tensors.items() if _unaligned(t)]
    if not keys:
        return tensors
    out = dict(tensors)
    out.update(zip(keys, _pooled_copies([tensors[k] for k in keys])))
    return out


def own_module_tensors(module: torch.nn.Module) -> torch.nn.Module:
    """owned_tensors for every parameter and buffer of ``module``: for modules from diffusers' /
    transformers' ``from_pretrained``, which keep safetensors' memory-mapped tensors."""
    slots = [(group, name) for sub in module.modules() for group in (sub._parameters, sub._buffers)
             for name, t in group.items() if t is not None and _unaligned(t.data)]
    for (group, name), copy in zip(slots, _pooled_copies([group[name].data for group, name in slots])):
        group[name].data = copy
    return module


def read_state_dict(path: str, device: str = "cpu", *, mmap: bool = False,
                    refused_hint: str | None = None) -> dict[str, torch.Tensor]:
    """Load every tensor of a checkpoint file. Wrappers (Lightning ``{"state_dict": …}``, BasicSR ``params_ema``,
    DeepSpeed/SAT ``{"module": …}``, …) are unwrapped. ``mmap``: memory-map a zip pickle instead of reading it
    (no second RAM copy of a multi-GB file; legacy non-zip pickles are then read normally). ``refused_hint``: what
    to do instead when a pickle holding Python objects is refused."""
    hint = {} if refused_hint is None else {"refused_hint": refused_hint}
    lower = path.lower()
    name = os.path.basename(path)
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        from safetensors.torch import load_file

        with explain_load_errors(name, path):
            return owned_tensors(load_file(path, device=device))
    if lower.endswith(PICKLE_EXTENSIONS):
        with explain_load_errors(name, path), torch.serialization.safe_globals(PICKLE_SAFE_GLOBALS):
            if mmap:
                try:
                    obj = torch_load_weights(path, name, map_location=device, mmap=True, **hint)
                except RuntimeError as e:
                    if "mmap" not in str(e):
                        raise
                    obj = torch_load_weights(path, name, map_location=device, **hint)  # a legacy (non-zip) file
            else:
                obj = torch_load_weights(path, name, map_location=device, **hint)
        return unwrap_state_dict(obj)
    raise AnimeVideoModelError(unsupported_extension_message(path))


def unsupported_extension_message(path: str) -> str:
    return (f"'{os.path.basename(path)}' has an unsupported extension; expected one of "
            f"{', '.join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)}.")


def is_safetensors(path: str) -> bool:
    return path.lower().endswith(SAFETENSORS_EXTENSIONS)


def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes: from the header for safetensors (no tensor is read), else from the loaded file."""
    if is_safetensors(path):
        from safetensors import safe_open

        with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: tuple(v.shape) for k, v in read_state_dict(path, mmap=True).items()}


def read_keys(path: str) -> list[str]:
    """Tensor names of a checkpoint file (safetensors: header only; pickles: memory-mapped, wrappers unwrapped)."""
    return list(read_shapes(path))


def read_metadata(path: str) -> dict[str, str]:
    """A safetensors file's ``__metadata__`` ({} for other formats)."""
    if not is_safetensors(path):
        return {}
    from safetensors import safe_open

    with explain_load_errors(os.path.basename(path), path), safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def storage_dtype(path: str) -> torch.dtype | None:
    """The floating dtype holding most of a safetensors file's bytes, from its header alone (None for other
    formats, folders and files without floating tensors): what ``dtype=auto`` keeps."""
    if not is_safetensors(path) or not os.path.isfile(path):
        return None
    import json

    with explain_load_errors(os.path.basename(path), path), open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    weight: dict[str, int] = {}
    for k, info in header.items():
        if k == "__metadata__" or info.get("dtype") not in _SAFETENSORS_DTYPES:
            continue
        start, end = info["data_offsets"]
        weight[info["dtype"]] = weight.get(info["dtype"], 0) + end - start
    return _SAFETENSORS_DTYPES[max(weight, key=weight.get)] if weight else None


def read_tensors(source, select=None, rename=None, dtype_for=None) -> dict[str, torch.Tensor]:
    """The tensors whose names ``select(key)`` accepts (all by default), each cast to ``dtype_for(key)`` (None: as stored) as it
    is read and stored under ``rename(key)``: peak memory stays near the selected part in its final dtype.
    ``source``: a path (safetensors are read one tensor at a time) or an already read state dict, whose
    selected tensors are popped as they are converted (read a pickle once, take its parts one by one)."""
    select = select or (lambda k: True)
    rename = rename or (lambda k: k)

    def cast(k, v):
        d = dtype_for(k) if dtype_for is not None else None  # None: keep the stored dtype
        return v.to(d) if d is not None and v.is_floating_point() else v

    if isinstance(source, str) and is_safetensors(source):
        from safetensors import safe_open

        out = {}
        with explain_load_errors(os.path.basename(source), source), safe_open(source, framework="pt") as f:
            for k in f.keys():
                if select(k):
                    out[rename(k)] = cast(k, f.get_tensor(k))
        return owned_tensors(out)
    sd = read_state_dict(source) if isinstance(source, str) else source
    out = {}
    for k in [k for k in sd if select(k)]:
        out[rename(k)] = cast(k, sd.pop(k))
    return out


def take_prefix(source, prefix: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """:func:`read_tensors` of the tensors under ``prefix``, the prefix stripped, cast to ``dtype``."""
    return read_tensors(source, select=lambda k: k.startswith(prefix), rename=lambda k: k[len(prefix):],
                        dtype_for=None if dtype is None else (lambda k: dtype))


# Training wrappers around a whole state dict: DataParallel/DDP, BasicSR's generators, GAN trainers.
WRAPPER_PREFIXES = ("module.", "netG.", "generator.")


def strip_common_prefix(sd: dict, prefixes=WRAPPER_PREFIXES) -> dict:
    """``sd`` without a prefix that EVERY key has (repeatedly, e.g. ``module.netG.``); a copy when stripped.
    Works on a state dict or a shapes dict alike."""
    changed = True
    while sd and changed:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def shapes_of(sd: dict) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a state dict (tensors) or of a shapes dict (passed through)."""
    return {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in sd.items()}


def meta_state_dict(shapes: dict, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Tensors on the meta device with the given shapes (no memory): a state dict to detect or size from when
    only the key table is known."""
    return {k: torch.empty(tuple(s), dtype=dtype, device="meta") for k, s in shapes.items()}


# ---------------------------------------------------------------------------------------------
# Building a network without memory, then filling it with the file's tensors
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def empty_weights(keep_buffers: bool = False):
    """Build modules without allocating or initialising weights. ``keep_buffers=False``: everything on the meta
    device (``with torch.device("meta")``); ``True``: parameters on meta, buffers real (for networks whose
    buffers are computed at construction and are not in the file, e.g. rotary tables)."""
    if not keep_buffers:
        with torch.device("meta"):
            yield
        return
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def materialize(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Put ``sd``'s tensors into a module built under :func:`empty_weights` (assigned, not copied). Missing or
    unexpected tensors raise an error naming ``what``; transformers' non-persistent ``position_ids`` index
    buffers are rebuilt; the module is returned in eval mode without gradients."""
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise AnimeVideoModelError(
            f"The {what} weights do not fit the detected architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}).")
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            if name.endswith("position_ids"):  # a non-persistent index buffer in transformers' CLIP
                owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                owner.register_buffer("position_ids", torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
            else:
                raise AnimeVideoModelError(f"The {what} has no value for buffer {name}.")
    for name, p in model.named_parameters():
        if p.is_meta:
            raise AnimeVideoModelError(f"The {what} has no value for {name}.")
    return model.eval().requires_grad_(False)


def torch_load_weights(path: str, name: str, refused_hint: str = "Convert it to .safetensors or use the released "
                       "file.", **kwargs):
    """``torch.load(weights_only=True)``; a pickle that references Python classes or functions is refused with a
    message saying so (other failures are classified by :func:`explain_load_errors`)."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):  # a class or function reference
            raise AnimeVideoModelError(
                f"'{name}' holds Python objects besides tensors, which could run code when loaded; it is "
                f"refused (only plain tensors are read). {refused_hint}") from None
        raise
    except (KeyError, IndexError, ValueError, TypeError, struct.error, UnicodeDecodeError) as e:
        # what the weights-only unpickler raises on bytes that are not a pickle stream (a text file, garbage)
        raise AnimeVideoModelError(damaged_file_message(name, e)) from None


def damaged_file_message(name: str, e: BaseException) -> str:
    return (f"Could not read '{name}': the file is damaged or incomplete (often an interrupted download; "
            f"download it again). Details: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# What went wrong while loading: memory, packages, a damaged file, or something else
# ---------------------------------------------------------------------------------------------

# Packages whose failures while loading point at an installed version, and their distribution names.
_PACKAGES = {"diffusers": "diffusers", "transformers": "transformers", "accelerate": "accelerate",
             "safetensors": "safetensors", "spandrel": "spandrel", "huggingface_hub": "huggingface-hub",
             "numpy": "numpy", "PIL": "Pillow", "torch": "torch"}
# What a torch.load of a truncated or corrupt file raises as RuntimeError (zip reader, legacy pickle reader).
_CORRUPT_MARKERS = ("PytorchStreamReader", "zip archive", "unexpected EOF", "might be corrupted",
                    "invalid load key", "truncated", "storage has wrong byte size")
_REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")


def damaged_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that only a bad file gives: safetensors header/parse errors, pickle and zip stream errors."""
    types: list[type[BaseException]] = [pickle.UnpicklingError, EOFError, zipfile.BadZipFile]
    try:
        from safetensors import SafetensorError
        types.append(SafetensorError)
    except ImportError:  # very old safetensors: its errors then fall to the generic message
        pass
    return tuple(types)


def required_version(dist: str) -> str | None:
    """The highest floor any capability gives ``dist`` in pipelines/dependencies.py, else requirements.txt's."""
    from .dependencies import NEEDS, version_tuple

    floors = [v for needs in NEEDS.values() for d, v in needs if d.lower() == dist.lower()]
    if floors:
        return max(floors, key=version_tuple)
    try:
        with open(_REQUIREMENTS, encoding="utf-8") as fh:
            for line in fh:
                m = re.match(rf"^\s*{re.escape(dist)}\s*>=\s*([\w.]+)", line, flags=re.IGNORECASE)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def _package_of(e: BaseException) -> str | None:
    """The third-party package an ImportError/AttributeError comes from (None: our own code, i.e. a bug)."""
    def top(module: str | None) -> str | None:
        root = (module or "").split(".")[0]
        return root if root in _PACKAGES else None

    if isinstance(e, ImportError):
        return top(e.name) or top(getattr(e, "path", None) and os.path.basename(e.path))
    obj = getattr(e, "obj", None)
    if obj is not None:
        found = top(obj.__name__) if isinstance(obj, type(sys)) else top(type(obj).__module__)
        if found:
            return found
    tb, found = e.__traceback__, None
    while tb is not None:  # the innermost frame inside a known package
        found = top(tb.tb_frame.f_globals.get("__name__")) or found
        tb = tb.tb_next
    return found


def package_message(name: str, package: str, e: BaseException, needs: dict[str, str] | None = None) -> str:
    from .dependencies import installed_version

    dist = _PACKAGES.get(package, package)
    floor = (needs or {}).get(dist) or required_version(dist)
    version = installed_version(dist)
    have = f"the installed {dist} {version}" if version else f"{dist}, which is not installed,"
    want = f" needs {dist} {floor} or newer" if floor else f" needs a version of {dist} that has it"
    return (f"Could not load '{name}': {have} lacks what this model needs ({type(e).__name__}: {e}). The file "
            f"is not damaged; this pack{want}. Update it in ComfyUI's Python: {sys.executable} -m pip install -U "
            f"\"{dist}{'>=' + floor if floor else ''}\", then restart ComfyUI.")


def memory_message(name: str, e: BaseException, path: str | None = None) -> str:
    size = ""
    if path and os.path.exists(path):
        nbytes = FileIdentity.of(path).size
        size = f" ({nbytes / 2 ** 30:.1f} GB on disk)"
    where = "GPU" if isinstance(e, torch.OutOfMemoryError) or "cuda" in str(e).lower() else "system (RAM)"
    return (f"Out of {where} memory while loading '{name}'{size}; the file is not damaged. Free memory first "
            "(close other workflows or unload models, e.g. ComfyUI's 'Unload Models'), pick a smaller dtype "
            "(fp16/bf16) or a smaller variant of the model, or use a machine with more memory. "
            f"Details: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


@contextlib.contextmanager
def explain_load_errors(name: str, path: str | None = None, needs: dict[str, str] | None = None):
    """Turn a failure while loading ``name`` into an error that says what happened:

    - out of memory (``torch.OutOfMemoryError``, ``MemoryError``, an allocator RuntimeError) ->
      :class:`AnimeVideoMemoryError` with memory advice, never "damaged";
    - a missing or too old package (ImportError, or an AttributeError raised by/on diffusers, transformers, ...)
      -> :class:`AnimeVideoDependencyError` naming the package, its installed version and the version needed
      (``needs`` overrides the floors of pipelines/dependencies.py);
    - safetensors header/parse errors, truncated or corrupt zip/pickle streams -> "damaged file";
    - a file that cannot be opened (missing, no permission) -> that, with the OS's reason; other OS errors
      (a diffusers folder without its weight file, ...) as they are, without calling the file damaged.

    Anything else passes through unchanged: an unexpected error is a bug to see, not to relabel. The pack's own
    errors pass through as well.
    """
    from .memory import is_allocation_failure

    try:
        yield
    except (AnimeVideoModelError, AnimeVideoInputError):
        raise
    except (ImportError, AttributeError) as e:
        package = _package_of(e)
        if package is None:
            raise
        raise AnimeVideoDependencyError(package_message(name, package, e, needs)) from None
    except damaged_error_types() as e:
        raise AnimeVideoModelError(damaged_file_message(name, e)) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise AnimeVideoModelError(f"Could not open '{name}': {e.strerror or e}.") from None
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EIO):  # what reading past the end of a truncated zip checkpoint gives
            raise AnimeVideoModelError(damaged_file_message(name, e)) from None
        raise AnimeVideoModelError(f"Could not read '{name}': {type(e).__name__}: {e}") from None
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if is_allocation_failure(e):
            raise AnimeVideoMemoryError(memory_message(name, e, path)) from None
        if isinstance(e, RuntimeError) and any(m in str(e) for m in _CORRUPT_MARKERS):
            raise AnimeVideoModelError(damaged_file_message(name, e)) from None
        raise


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    # Training frameworks nest the weights (Lightning, BasicSR, DeepSpeed/SAT, plain PyTorch scripts), sometimes
    # twice.
    wrappers = ("state_dict", "params_ema", "params-ema", "params", "model_state_dict", "model", "net", "module")
    for _ in range(2):
        for wrapper in wrappers:
            if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise AnimeVideoModelError("The checkpoint does not contain a state dict of tensors.")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def safetensors_variant(folder: str, stem: str) -> str | None:
    """The diffusers ``variant`` of a component folder's weights: None for ``stem.safetensors``, "fp16" for
    ``stem.fp16.safetensors``; only safetensors weights are loaded from diffusers folders."""
    files = os.listdir(folder) if os.path.isdir(folder) else []
    if f"{stem}.safetensors" in files:
        return None
    if f"{stem}.fp16.safetensors" in files:
        return "fp16"
    raise AnimeVideoModelError(
        f"'{folder}' has no {stem}.safetensors (or .fp16.safetensors). Only safetensors weights are loaded; "
        "download the folder's safetensors files.")
