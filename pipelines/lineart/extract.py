"""Lineart hints in LVCD's convention, from colour frames (the generator) or from existing line drawings.

LVCD's ControlNet hint is a 3-channel image in 0..1 with **white lines (1) on black (0)**. LVCD makes it with
ControlNet-1.1's lineart annotator (``coarse=False``), which

1. takes the frame as uint8 RGB, divides by 255 and runs the generator on [1, 3, h, w];
2. returns ``(line * 255).clip(0, 255).astype(uint8)`` (truncation), black lines on white;

after which LVCD takes ``hint = 1 - skt / 255`` replicated to 3 channels. :func:`extract_lineart` does exactly
that on a ComfyUI IMAGE batch (``exact=True``: the two uint8 roundings are kept; ``exact=False`` skips them).
Frame sides that are not multiples of the generator's 4 (or below its minimum) are padded by edge replication
on the bottom/right and the result is cropped back, so the output always has the input's size.

:func:`to_hint` converts a line drawing the user already has (hand-drawn, or another extractor's) into the
same convention: greyscale (ITU-R BT.601 luma), inverted when it is dark lines on light paper.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import AnimeVideoInputError
from .model import LineartGenerator

POLARITIES = ("auto", "white_on_black", "black_on_white")
LUMA = (0.299, 0.587, 0.114)  # PIL's convert("L") weights


def _as_batch(images: torch.Tensor, input_name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise AnimeVideoInputError(f"{input_name}: expected an IMAGE tensor [frames, H, W, 3], got {type(images).__name__}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise AnimeVideoInputError(
            f"{input_name}: expected an IMAGE [frames, H, W, 3] with at least one frame, got shape {tuple(images.shape)}.")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise AnimeVideoInputError(f"{input_name}: empty frames of size {images.shape[1]}x{images.shape[2]}.")
    if images.shape[-1] == 4:  # RGBA: the colour part
        images = images[..., :3]
    elif images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    return images


def pad_amounts(h: int, w: int, multiple: int, min_side: int) -> tuple[int, int]:
    """(bottom, right) padding that makes both sides multiples of ``multiple`` and at least ``min_side``."""
    def target(s):
        return max(min_side, -(-s // multiple) * multiple)

    return target(h) - h, target(w) - w


def _replicate_pad(x: torch.Tensor, pad_b: int, pad_r: int) -> torch.Tensor:
    """Edge-replicate on the bottom/right (any amount, even more than the side itself)."""
    if pad_b:
        x = torch.cat([x, x[:, :, -1:, :].expand(-1, -1, pad_b, -1)], dim=2)
    if pad_r:
        x = torch.cat([x, x[:, :, :, -1:].expand(-1, -1, -1, pad_r)], dim=3)
    return x


@torch.no_grad()
def line_map(model: LineartGenerator, x: torch.Tensor) -> torch.Tensor:
    """The generator on [b, 3, h, w] 0..1 (any size) -> [b, 1, h, w] in 0..1, lines dark; pads and crops back."""
    cfg = model.config
    h, w = x.shape[-2:]
    pb, pr = pad_amounts(h, w, cfg.size_multiple, cfg.min_side)
    out = model(_replicate_pad(x, pb, pr))
    return out[:, :, :h, :w]


def _hints(model: LineartGenerator, frames: torch.Tensor, device, exact: bool) -> torch.Tensor:
    """[b, H, W, 3] 0..1 (any device) -> hints [b, H, W, 3] float32 on ``device``."""
    x = frames.to(device=device, dtype=torch.float32).clamp(0, 1)
    if exact:  # the annotator reads uint8 RGB
        x = torch.round(x * 255.0) / 255.0
    line = line_map(model, x.permute(0, 3, 1, 2).to(model.dtype))[:, 0].float()
    if exact:  # (line * 255).clip(0, 255).astype(uint8), then LVCD's / 255
        line = torch.floor((line * 255.0).clamp(0, 255)) / 255.0
    else:
        line = line.clamp(0, 1)
    return (1.0 - line).unsqueeze(-1).expand(-1, -1, -1, 3)


@torch.no_grad()
def extract_lineart(model: LineartGenerator, images: torch.Tensor, chunk_size: int = 8, device=None,
                    on_chunk: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None, exact: bool = True) -> torch.Tensor:
    """Colour frames IMAGE [N, H, W, 3] 0..1 -> LVCD hints IMAGE [N, H, W, 3] float32 0..1, white lines on black.

    Runs in chunks of ``chunk_size`` frames on ``device`` (default: where the model is) in the model's dtype;
    ``check_interrupt()`` is called before and ``on_chunk(done, total)`` after each chunk. On out-of-memory the
    chunk is halved and retried (down to one frame; the result does not depend on the chunk size, instance norm
    being per frame). The output is on the CPU.
    """
    images = _as_batch(images, "image")
    if int(chunk_size) < 1:
        raise AnimeVideoInputError(f"chunk_size: must be at least 1, got {chunk_size}.")
    if model.config.input_nc != 3:
        raise AnimeVideoInputError(f"model: this generator takes {model.config.input_nc} channels, not RGB.")
    device = torch.device(device) if device is not None else model.device
    n, h, w = images.shape[:3]
    out = torch.empty((n, h, w, 3), dtype=torch.float32)
    chunk = int(chunk_size)
    start = 0
    while start < n:
        if check_interrupt is not None:
            check_interrupt()
        try:
            hint = _hints(model, images[start:start + chunk], device, exact)
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        out[start:start + len(hint)] = hint.cpu()
        start += len(hint)
        if on_chunk is not None:
            on_chunk(start, n)
    return out


def grey(images: torch.Tensor) -> torch.Tensor:
    """[N, H, W, 3] -> [N, H, W] luma (ITU-R BT.601)."""
    r, g, b = images.unbind(-1)
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def detect_polarity(images: torch.Tensor) -> str:
    """"black_on_white" when the batch is mostly light (mean luma > 0.5: dark lines on paper), else
    "white_on_black". The whole batch decides together, so one sequence never flips polarity frame to frame."""
    images = _as_batch(images, "image").float().clamp(0, 1)
    return "black_on_white" if float(grey(images).mean()) > 0.5 else "white_on_black"


def to_hint(images: torch.Tensor, polarity: str = "auto") -> torch.Tensor:
    """A line drawing IMAGE [N, H, W, C] 0..1 -> LVCD hint IMAGE [N, H, W, 3] float32 0..1, white lines on black.

    ``polarity``: what the input is: "white_on_black" (kept), "black_on_white" (inverted), or "auto"
    (:func:`detect_polarity`: inverted when the mean is above 0.5). Colour inputs become grey first.
    """
    if polarity not in POLARITIES:
        raise AnimeVideoInputError(f"polarity: '{polarity}' is not one of {', '.join(POLARITIES)}.")
    images = _as_batch(images, "image").float().clamp(0, 1)
    if polarity == "auto":
        polarity = detect_polarity(images)
    g = grey(images)
    if polarity == "black_on_white":
        g = 1.0 - g
    return g.clamp(0, 1).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
