"""RAM checks for work that holds a whole clip in memory.

A clip that does not fit must be refused before the work starts, with a message that names the size and what to
change: the kernel's OOM killer ends the whole ComfyUI process without a word and the user loses the queue. The
available RAM comes from the caller (ComfyUI's model_management through nodes/comfy_bridge.py) or, outside
ComfyUI, from /proc/meminfo's MemAvailable. ``ANIMEVIDEO_MAX_RAM_GB`` caps it further (shared machines, tests).
"""
from __future__ import annotations

import contextlib
import os

import torch

from .errors import AnimeVideoMemoryError

GIB = 1024 ** 3
# Left free for everything else (the OS, ComfyUI, previews, the next node's copy of the result).
HEADROOM_BYTES = GIB // 2
CHUNK_ADVICE = ("or process the clip in parts: VideoHelperSuite's Meta Batch Manager (on its Load Video and Video "
                "Combine nodes) runs the workflow on a few frames at a time")
# Inside ComfyUI the pack's models are managed by core: its memory flags then stream the weights layer by layer.
LOWVRAM_ADVICE = ("Or start ComfyUI with --lowvram (or --novram, or --reserve-vram N to leave room): the model's "
                  "weights then stay in RAM and reach the GPU layer by layer, slower but in less GPU memory.")
# Messages of failed allocations: PyTorch's CPU allocator, the CUDA caching allocator, the OS.
ALLOCATOR_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory",
                   "defaultcpuallocator", "failed to allocate")


def proc_mem_available(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (Linux), or None where it cannot be read."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def system_available_bytes() -> int | None:
    """RAM available to new allocations without swapping, as far as the OS tells; None when unknown."""
    available = proc_mem_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    return available


def apply_limit(available: int | None) -> int | None:
    """``available`` capped by ANIMEVIDEO_MAX_RAM_GB when that is set."""
    limit = os.environ.get("ANIMEVIDEO_MAX_RAM_GB", "").strip()
    if limit:
        try:
            cap = int(float(limit) * GIB)
        except ValueError:
            cap = None
        if cap is not None and cap > 0:
            return cap if available is None else min(available, cap)
    return available


def tensor_bytes(shape, dtype: torch.dtype = torch.float32) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def fmt_bytes(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB // 10 else f"{n / 2 ** 20:.0f} MiB"


def check_fits(what: str, result_bytes: int, working_bytes: int, available: int | None, advice: str):
    """Raise AnimeVideoMemoryError when ``result_bytes`` + ``working_bytes`` (+ headroom) exceed ``available``.
    ``what`` says what is built ("the upscaled clip, 240 frames of 3840x2160"); ``advice`` what to change."""
    if available is None:
        return
    needed = int(result_bytes) + int(working_bytes)
    if needed + HEADROOM_BYTES <= available:
        return
    raise AnimeVideoMemoryError(
        f"Not enough memory: {what} needs about {fmt_bytes(needed)} of RAM ({fmt_bytes(result_bytes)} for the "
        f"result, {fmt_bytes(working_bytes)} while working), but only {fmt_bytes(available)} is available. "
        f"Nothing was started. {advice}")


def is_allocation_failure(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in ALLOCATOR_WORDS)


@contextlib.contextmanager
def allocation_guard(what: str, nbytes: int, advice: str):
    """Turn a failed allocation inside the block (torch.OutOfMemoryError, an allocator RuntimeError, MemoryError)
    into AnimeVideoMemoryError naming the size and what to change."""
    try:
        yield
    except Exception as e:
        if isinstance(e, AnimeVideoMemoryError) or not is_allocation_failure(e):
            raise
        raise out_of_memory_error(what, nbytes, e, advice) from None


def out_of_memory_error(what: str, nbytes: int, e: BaseException, advice: str) -> AnimeVideoMemoryError:
    """The pack's error for the failed allocation ``e``: what needed about ``nbytes``, the allocator's first line,
    and what to change."""
    first_line = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    size = f" needs about {fmt_bytes(nbytes)} and" if nbytes else ":"
    return AnimeVideoMemoryError(f"Out of memory: {what}{size} the allocation failed ({first_line}). {advice}")


def allocate(shape, dtype, device, what: str, advice: str) -> torch.Tensor:
    """``torch.empty`` whose failure is an AnimeVideoMemoryError naming the size and what to change."""
    with allocation_guard(what, tensor_bytes(shape, dtype), advice):
        return torch.empty(tuple(shape), dtype=dtype, device=device)
