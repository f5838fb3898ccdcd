"""Upscale a clip in chunks of frames, with working memory bounded by one chunk.

The clip stays where it is (an IMAGE tensor [N, H, W, 3] on the CPU). Frames move to the compute device one
chunk at a time, each frame is prepared (optional Lanczos input rescaling, padding to the model's multiple),
upscaled, cropped back, optionally Lanczos-resized to the output scale, clamped to 0..1 and written into one
float32 output tensor allocated once at the final size. Only a chunk of inputs and a chunk of outputs ever live
on the device.

AnimeSR is recurrent: frame t needs frames t-1 and t+1, the previous SR output and the hidden state. The
previous SR output and the state stay on the device across chunk borders and the next chunk is fetched when the
window reaches it, so the result is the same, bit for bit, whatever the chunk size. Border frames reuse
themselves as their missing neighbour; the first frame starts from a zero SR frame and a zero state. The fed-back
SR frame is the unclamped model output.

Sizes. AnimeSR needs frame sides that are multiples of 4: frames are padded on the right and bottom (reflect,
then replicate where a frame is too small to reflect) and the output is cropped back, so any size works and the
output is exactly ``scale`` times the (rescaled) input. spandrel models pad themselves to their own size
requirements the same way.

Tiles. ``tile_size`` > 0 processes each frame in tiles of that many input px with ``tile_overlap`` px of overlap;
overlapping outputs are blended with linear ramps (for AnimeSR the SR frame and the hidden state are blended
alike, so the recurrence continues across tiles). With ``tile_size`` 0 whole frames are processed, and an
out-of-memory error switches to tiles of half the frame, halving again on each further error (as ComfyUI core's
upscale node does) down to ``MIN_TILE``. The reduced tile is kept for the rest of the clip.

Layout. Model inputs are channels-last (NHWC strides) by default: about 20 % faster convolutions on the CPU, and
what ComfyUI core hands spandrel models (``movedim``). ``channels_last=False`` feeds contiguous NCHW instead, which
reproduces the module's own whole-clip ``forward`` bit for bit; the two layouts differ by float rounding only.

Lanczos. :func:`lanczos_resize` is separable Lanczos (a = 4, as OpenCV's INTER_LANCZOS4 that the official AnimeSR
scripts use) with sample centres at pixel centres. When shrinking, the kernel is widened by the factor
(antialiasing, as PIL does; OpenCV does not), so ``input_rescaling`` < 1 gives cleaner, slightly softer frames
than the official script.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import memory
from ..errors import AnimeVideoInputError, AnimeVideoMemoryError
from ..image_ops import comfy_image_to_bchw
from ..svd.decode import _ramp
from .loader import Upscaler

LANCZOS_A = 4
MIN_TILE = 32
MAX_OUTPUT_SCALE = 8.0


@dataclass
class StreamOptions:
    chunk_size: int = 8  # frames moved to the device at once
    tile_size: int = 0  # input px per tile side; 0 = whole frames (tiles only after an out-of-memory error)
    tile_overlap: int = 16  # input px shared by neighbouring tiles
    input_rescaling: float = 1.0  # Lanczos resize of the input before the model (AnimeSR's input rescaling)
    output_scale: float = 0.0  # output size / input size; 0 = what the model gives (scale x input_rescaling)
    out_device: str = "cpu"
    channels_last: bool = True  # model inputs in NHWC memory layout (faster convolutions; what core feeds spandrel)


@dataclass
class ClipPlan:
    frames: int
    in_hw: tuple[int, int]
    model_hw: tuple[int, int]  # after input rescaling
    padded_hw: tuple[int, int]  # padded to the model's multiple (AnimeSR)
    sr_hw: tuple[int, int]  # model_hw * scale
    out_hw: tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Validation and sizes
# ---------------------------------------------------------------------------------------------

def check_options(opts: StreamOptions):
    if not isinstance(opts.chunk_size, int) or isinstance(opts.chunk_size, bool) or opts.chunk_size < 1:
        raise AnimeVideoInputError(f"chunk_size: {opts.chunk_size!r} frames; give 1 or more (frames moved to the "
                                   "device at once; lower uses less memory).")
    if not isinstance(opts.tile_size, int) or opts.tile_size < 0 or 0 < opts.tile_size < MIN_TILE:
        raise AnimeVideoInputError(f"tile_size: {opts.tile_size!r}; give 0 (whole frames) or {MIN_TILE} px or more.")
    if not isinstance(opts.tile_overlap, int) or opts.tile_overlap < 0:
        raise AnimeVideoInputError(f"tile_overlap: {opts.tile_overlap!r}; give 0 px or more.")
    r = opts.input_rescaling
    if not isinstance(r, (int, float)) or not math.isfinite(r) or not (0.0 < r <= 1.0):
        raise AnimeVideoInputError(f"input_rescaling: {r!r}; give a factor in (0, 1] (1 keeps the input size, "
                                   "0.5 halves it before upscaling).")
    s = opts.output_scale
    if not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0 or s > MAX_OUTPUT_SCALE:
        raise AnimeVideoInputError(f"output_scale: {s!r}; give 0 (the model's own scale) or a factor up to "
                                   f"{MAX_OUTPUT_SCALE:g}.")


def plan_clip(upscaler: Upscaler, n: int, h: int, w: int, opts: StreamOptions) -> ClipPlan:
    r = float(opts.input_rescaling)
    mh, mw = (h, w) if r == 1.0 else (max(1, round(h * r)), max(1, round(w * r)))
    m = upscaler.size_multiple if upscaler.recurrent else 1
    ph, pw = -(-mh // m) * m, -(-mw // m) * m
    s = upscaler.scale
    sr = (mh * s, mw * s)
    if opts.output_scale:
        out = (max(1, round(h * opts.output_scale)), max(1, round(w * opts.output_scale)))
    else:
        out = sr
    return ClipPlan(n, (h, w), (mh, mw), (ph, pw), sr, out)


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

# Feature maps of the model's width alive at once in a forward pass (input, output, a residual or dense branch).
LIVE_FEATURE_MAPS = 4
# Tile sizes tried, largest first, when whole frames would not fit the RAM.
TILE_CHOICES = (1024, 512, 256, 128, 64, MIN_TILE)


def feature_width(upscaler: Upscaler) -> int:
    """The widest convolution of the model (its feature maps' channel count)."""
    widths = [m.out_channels for m in upscaler.model.modules() if isinstance(m, torch.nn.Conv2d)]
    return max(widths, default=64)


def memory_needs(upscaler: Upscaler, plan: ClipPlan, opts: StreamOptions, device,
                 input_dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """(result, working) bytes of RAM a run takes: the float32 output clip, and what it needs besides while it
    works (the float32 copy of a non-float32 input; on a CPU device also the model's feature maps, the upscaled
    frame and, with tiles, the full-frame blend buffers). On a GPU the model's memory is the GPU's own business
    (an out-of-memory there switches to tiles)."""
    n = plan.frames
    result = n * plan.out_hw[0] * plan.out_hw[1] * 3 * 4
    working = 0
    if input_dtype != torch.float32:
        working += n * plan.in_hw[0] * plan.in_hw[1] * 3 * 4
    if torch.device(device).type != "cpu":
        return result, working
    elem = upscaler.dtype.itemsize
    ph, pw = plan.padded_hw
    s = upscaler.scale
    tile = opts.tile_size if opts.tile_size and upscaler.can_tile and opts.tile_size < max(ph, pw) else 0
    th, tw = (min(tile, ph), min(tile, pw)) if tile else (ph, pw)
    working += th * tw * feature_width(upscaler) * elem * LIVE_FEATURE_MAPS  # feature maps of one frame or tile
    working += 2 * (th * s) * (tw * s) * 3 * 4  # its output and a float32 / resized copy
    working += min(opts.chunk_size, n) * ph * pw * 3 * elem  # the chunk of input frames on the device
    if tile:
        working += (ph * s) * (pw * s) * 4 * 6  # blend accumulator (3 channels), weight sum, inverse, tile ramps
    if upscaler.recurrent:
        working += (ph * s) * (pw * s) * 3 * elem + ph * pw * 64 * elem  # fed-back SR frame and hidden state
    if plan.out_hw != plan.sr_hw:
        working += (ph * s) * (pw * s) * 3 * 4  # the Lanczos resize of each frame
    return result, working


def fit_to_memory(upscaler: Upscaler, plan: ClipPlan, opts: StreamOptions, device, available: int | None,
                  input_dtype: torch.dtype = torch.float32) -> tuple[StreamOptions, int, int]:
    """``opts`` unchanged when the run fits ``available`` bytes of RAM; with tile_size 0 and whole frames too
    large, the largest tile of TILE_CHOICES that fits (as the out-of-memory fallback would pick later). Returns
    (options, result bytes, working bytes) for memory.check_fits."""
    result, working = memory_needs(upscaler, plan, opts, device, input_dtype)
    if available is None or result + working + memory.HEADROOM_BYTES <= available:
        return opts, result, working
    if opts.tile_size == 0 and upscaler.can_tile and torch.device(device).type == "cpu":
        for tile in TILE_CHOICES:
            if tile >= max(plan.padded_hw):
                continue
            tiled = StreamOptions(**{**opts.__dict__, "tile_size": tile})
            r, w = memory_needs(upscaler, plan, tiled, device, input_dtype)
            if r + w + memory.HEADROOM_BYTES <= available:
                return tiled, r, w
    return opts, result, working


# ---------------------------------------------------------------------------------------------
# Lanczos resampling (separable, dense weight matrices)
# ---------------------------------------------------------------------------------------------

def lanczos_weights(n_in: int, n_out: int, a: int = LANCZOS_A) -> torch.Tensor:
    """[n_out, n_in] float32 rows summing to 1. Centres at pixel centres; the kernel widens by n_in/n_out when
    shrinking; taps outside the image are dropped and the row renormalised."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    d = ((torch.arange(n_in, dtype=torch.float64) + 0.5)[None, :] - centre[:, None]) / support
    w = torch.sinc(d) * torch.sinc(d / a)
    w = torch.where(d.abs() < a, w, torch.zeros_like(w))
    return (w / w.sum(dim=1, keepdim=True)).float()


class _Resizer:
    """Lanczos resize [n, c, h, w] -> [n, c, out_h, out_w] on the tensor's device, weights cached per size."""

    def __init__(self, a: int = LANCZOS_A):
        self.a = a
        self._cache: dict = {}

    def _w(self, n_in, n_out, device):
        key = (n_in, n_out, str(device))
        if key not in self._cache:
            self._cache[key] = lanczos_weights(n_in, n_out, self.a).to(device)
        return self._cache[key]

    def __call__(self, x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        dtype = x.dtype
        x = x.float()
        if h != out_h:
            x = torch.matmul(self._w(h, out_h, x.device), x)
        if w != out_w:
            x = torch.matmul(x, self._w(w, out_w, x.device).t())
        return x.to(dtype)


def lanczos_resize(x: torch.Tensor, out_h: int, out_w: int, a: int = LANCZOS_A) -> torch.Tensor:
    return _Resizer(a)(x, out_h, out_w)


# ---------------------------------------------------------------------------------------------
# Padding and tiles
# ---------------------------------------------------------------------------------------------

def pad_to(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pad [n, c, h, w] on the right/bottom to (ph, pw): reflect as far as the frame allows, then replicate."""
    h, w = x.shape[-2:]
    dh, dw = ph - h, pw - w
    if dh == 0 and dw == 0:
        return x
    rh, rw = min(dh, h - 1), min(dw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if dh - rh or dw - rw:
        x = F.pad(x, (0, dw - rw, 0, dh - rh), mode="replicate")
    return x


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of tiles of ``tile`` px covering ``size`` px, neighbours overlapping by at least ``overlap`` px,
    each start a multiple of ``align`` (size and tile are multiples of align)."""
    if tile >= size:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def _tile_layout(h, w, tile, overlap, align):
    tile = max(align, tile // align * align)
    overlap = min(overlap // align * align, tile // 2 // align * align)
    boxes = []
    th, tw = min(tile, h), min(tile, w)
    for y0 in tile_starts(h, th, overlap, align):
        for x0 in tile_starts(w, tw, overlap, align):
            boxes.append((y0, min(h, y0 + th), x0, min(w, x0 + tw)))
    return boxes, overlap


class _Blender:
    """Accumulates tile outputs with linear-ramp weights; the weights of a layout are computed once."""

    def __init__(self, boxes, overlap, h, w, scale, device):
        self.boxes, self.scale = boxes, scale
        self.weights = []
        wsum = torch.zeros((1, 1, h * scale, w * scale), device=device)
        for y0, y1, x0, x1 in boxes:
            wy = _ramp((y1 - y0) * scale, overlap * scale, y0 > 0, y1 < h).to(device)
            wx = _ramp((x1 - x0) * scale, overlap * scale, x0 > 0, x1 < w).to(device)
            wt = (wy[:, None] * wx[None, :])[None, None]
            self.weights.append(wt)
            wsum[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += wt
        self.inv = 1.0 / wsum

    def run(self, fn, channels) -> torch.Tensor:
        """``fn(box)`` for every tile, each output added into the float32 accumulator as soon as it exists."""
        s = self.scale
        acc = None
        for box, wt in zip(self.boxes, self.weights):
            o = fn(box)
            if acc is None:
                acc = torch.zeros((o.shape[0], channels, *self.inv.shape[-2:]), device=o.device)
            y0, y1, x0, x1 = box
            acc[..., y0 * s:y1 * s, x0 * s:x1 * s] += o.float() * wt
            del o
        return acc.mul_(self.inv)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------

def _empty_cache(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class _Runner:
    def __init__(self, up: Upscaler, frames_bchw: torch.Tensor, plan: ClipPlan, opts: StreamOptions, device,
                 on_frame, check_interrupt):
        self.up, self.x, self.plan, self.opts = up, frames_bchw, plan, opts
        self.device = torch.device(device)
        self.dtype = up.dtype
        self.on_frame, self.check_interrupt = on_frame, check_interrupt
        self.chunk = opts.chunk_size
        self.tile = opts.tile_size
        self.resize = _Resizer()
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        self._loaded = (0, 0, None)  # (start, stop, frames on device as [n, 3, H, W])
        self._blenders: dict = {}
        self.oom_retries = 0

    # --- input side ------------------------------------------------------------------------
    def _load_chunk(self, start: int):
        n = self.plan.frames
        while True:
            stop = min(n, start + self.chunk)
            try:
                self._loaded = (0, 0, None)
                dev = self.x[start:stop].to(self.device, non_blocking=False)
                self._loaded = (start, stop, dev)
                return
            except torch.OutOfMemoryError:
                _empty_cache(self.device)
                if self.chunk == 1:
                    raise
                self.chunk = max(1, self.chunk // 2)
                self.oom_retries += 1

    def lr_frame(self, i: int) -> torch.Tensor:
        """Frame i prepared for the model: [1, 3, ph, pw] in the model dtype on the device."""
        a, b, dev = self._loaded
        if not (a <= i < b):
            self._load_chunk(i)
            a, b, dev = self._loaded
        f = dev[i - a:i - a + 1]
        mh, mw = self.plan.model_hw
        if (mh, mw) != self.plan.in_hw:
            f = self.resize(f.float(), mh, mw)  # not clamped: the official feeds cv2's Lanczos output as is
        return self.layout(pad_to(f.to(self.dtype), *self.plan.padded_hw))

    def layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=self.memory_format)

    # --- tiles ------------------------------------------------------------------------------
    def _boxes(self, h, w):
        if not self.tile or not self.up.can_tile or (self.tile >= h and self.tile >= w):
            return None
        align = self.up.size_multiple
        key = (h, w, self.tile)
        if key not in self._blenders:
            boxes, overlap = _tile_layout(h, w, self.tile, self.opts.tile_overlap, align)
            scale = self.up.scale
            self._blenders[key] = (_Blender(boxes, overlap, h, w, scale, self.device),
                                   _Blender(boxes, overlap, h, w, 1, self.device) if self.up.recurrent else None)
        return self._blenders[key]

    def _with_oom_fallback(self, fn, h, w):
        while True:
            try:
                return fn(self._boxes(h, w))
            except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
                if not memory.is_allocation_failure(e):  # a CPU allocator failure is a RuntimeError
                    raise
                _empty_cache(self.device)
                align = self.up.size_multiple
                current = self.tile if self.tile and self.tile < max(h, w) else max(h, w)
                smaller = current // 2 // align * align
                if not self.up.can_tile or smaller < MIN_TILE:
                    raise AnimeVideoMemoryError(
                        f"Out of memory on {self.device} upscaling {h}x{w} px frames even in tiles of "
                        f"{current} px. Free memory (other models), use input_rescaling below 1, or run on a "
                        f"device with more memory. ({e})") from None
                self.tile = smaller
                self.oom_retries += 1

    # --- model steps ------------------------------------------------------------------------
    def image_step(self, lr: torch.Tensor) -> torch.Tensor:
        def run(layout):
            if layout is None:
                return self.up.run_image(lr)
            blender, _ = layout
            return blender.run(lambda b: self.up.run_image(lr[..., b[0]:b[1], b[2]:b[3]]), 3)

        return self._with_oom_fallback(run, *lr.shape[-2:])

    def animesr_step(self, window, prev_sr, state):
        model = self.up.model

        def run(layout):
            if layout is None:
                return model.cell(window, prev_sr, state)
            sr_blender, st_blender = layout
            s = self.up.scale
            tile_states = []

            def tile(box):
                y0, y1, x0, x1 = box
                o, st = model.cell(window[..., y0:y1, x0:x1], prev_sr[..., y0 * s:y1 * s, x0 * s:x1 * s],
                                   state[..., y0:y1, x0:x1])
                tile_states.append(st)  # LR-sized; blended after the SR tiles
                return o

            sr = sr_blender.run(tile, 3)
            states = iter(tile_states)
            new_state = st_blender.run(lambda box: next(states), state.shape[1])
            return self.layout(sr.to(window.dtype)), self.layout(new_state.to(window.dtype))

        return self._with_oom_fallback(run, *window.shape[-2:])

    # --- output side ------------------------------------------------------------------------
    def finish(self, sr: torch.Tensor) -> torch.Tensor:
        """Model output [1, 3, ...] -> [1, 3, out_h, out_w] float32 0..1 on the device."""
        sh, sw = self.plan.sr_hw
        sr = sr[..., :sh, :sw].float()
        oh, ow = self.plan.out_hw
        if (oh, ow) != (sh, sw):
            return self.resize(sr, oh, ow).clamp_(0, 1)
        if not self.up.recurrent:
            return sr  # spandrel's call has clamped it already
        return sr.clamp(0, 1)  # a new tensor: the unclamped SR frame is fed back

    # --- the loop ---------------------------------------------------------------------------
    def run(self, out: torch.Tensor) -> torch.Tensor:
        n = self.plan.frames
        writer = _ChunkWriter(out, self.device)
        if self.up.recurrent:
            prev = cur = self.lr_frame(0)
            nxt = self.lr_frame(1) if n > 1 else cur
            prev_sr, state = (self.layout(t) for t in self.up.model.initial_state(cur))
            for i in range(n):
                if self.check_interrupt is not None:
                    self.check_interrupt()
                window = torch.cat((prev, cur, nxt), dim=1)
                prev_sr, state = self.animesr_step(window, prev_sr, state)
                writer.put(i, self.finish(prev_sr), self.chunk)
                if self.on_frame is not None:
                    self.on_frame(i + 1, n)
                prev, cur = cur, nxt
                nxt = self.lr_frame(i + 2) if i + 2 < n else cur
        else:
            for i in range(n):
                if self.check_interrupt is not None:
                    self.check_interrupt()
                writer.put(i, self.finish(self.image_step(self.lr_frame(i))), self.chunk)
                if self.on_frame is not None:
                    self.on_frame(i + 1, n)
        writer.flush()
        self._loaded = (0, 0, None)
        return out


class _ChunkWriter:
    """Writes finished frames into the preallocated output: directly when the output lives on the compute
    device, else gathered into one device buffer per chunk and copied across once."""

    def __init__(self, out: torch.Tensor, device):
        self.out = out
        self.direct = out.device == torch.device(device)
        self.buf, self.start, self.count = None, 0, 0

    def put(self, i: int, frame: torch.Tensor, chunk: int):
        f = frame[0].permute(1, 2, 0)
        if self.direct:
            self.out[i].copy_(f)
            return
        if self.buf is None or self.buf.shape[0] != chunk:
            self.flush()
            self.buf = torch.empty((chunk, *f.shape), dtype=torch.float32, device=f.device)
        if self.count == 0:
            self.start = i
        self.buf[self.count].copy_(f)
        self.count += 1
        if self.count == self.buf.shape[0]:
            self.flush()

    def flush(self):
        if self.buf is not None and self.count:
            self.out[self.start:self.start + self.count].copy_(self.buf[:self.count])
        self.count = 0


def upscale_frames(upscaler: Upscaler, frames: torch.Tensor, opts: StreamOptions | None = None,
                   device=None, on_frame: Callable[[int, int], None] | None = None,
                   check_interrupt: Callable[[], None] | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """IMAGE frames [N, H, W, C] (0..1) -> upscaled IMAGE [N, H', W', 3] float32 on ``opts.out_device``.

    ``device``: where the model runs (default: where its weights are). ``on_frame(done, total)`` is called after
    each frame, ``check_interrupt()`` before each (it raises to stop). ``out``: an optional preallocated output.
    """
    opts = opts or StreamOptions()
    check_options(opts)
    x = comfy_image_to_bchw(frames, "frames")
    n, _, h, w = x.shape
    if n < 1 or h < 1 or w < 1:
        raise AnimeVideoInputError(f"frames: an empty IMAGE batch {tuple(frames.shape)}; give at least one frame.")
    plan = plan_clip(upscaler, n, h, w, opts)
    shape = (n, *plan.out_hw, 3)
    if out is None:
        out = memory.allocate(shape, torch.float32, opts.out_device,
                              f"the upscaled clip ({n} frames of {plan.out_hw[1]}x{plan.out_hw[0]})",
                              "Lower output_scale or input_rescaling, or upscale fewer frames at a time.")
    elif tuple(out.shape) != shape or out.dtype != torch.float32:
        raise AnimeVideoInputError(f"out: expected a float32 tensor {shape}, got {out.dtype} {tuple(out.shape)}.")
    device = torch.device(device) if device is not None else upscaler.device
    runner = _Runner(upscaler, x, plan, opts, device, on_frame, check_interrupt)
    with torch.inference_mode():  # the output was allocated outside: callers may modify it in place
        return runner.run(out)
