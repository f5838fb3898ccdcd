"""Feature extraction for the set metrics: the papers' clip protocols, batched with memory bounded by the batch.

FVD/KVD protocols (digest A1, B8.12, GANime 2.6), each recorded in the results:

- ``standard``: the first 16 frames of every clip (clips need at least 16), each frame resized to 224x224
  (bilinear, no antialiasing, as ``tf.image.resize_bilinear`` in the original FVD code), values in [-1, 1];
  one I3D feature per clip. StyleGAN-V's and most papers' setting.
- ``windows``: every non-overlapping 16-frame window of every clip (LVCD's recommended reading; a tail shorter
  than 16 frames is dropped); one feature per window.
- ``ganime``: GANime's evaluation: the first frame is excluded, clips shorter than 9 frames get zero frames
  (mid-grey in [-1, 1]) prepended, and the whole remaining clip goes through I3D as one window.

FID: every frame, resized to 299x299 with antialiased bicubic ("clean" resizing, as clean-fid argues for;
pytorch-fid's plain bilinear aliases on downscaling), values in [-1, 1], one 2048-d feature per frame.

Clips arrive as an iterable (a folder read lazily, or tensors), windows are gathered into batches of
``batch_size`` and only the features are kept: memory is bounded by one batch, not by the set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..errors import AnimeVideoInputError
from . import i3d as i3d_net
from . import inception as inception_net

WINDOW = 16
GANIME_MIN_FRAMES = 9


@dataclass(frozen=True)
class VideoProtocol:
    name: str
    description: str


VIDEO_PROTOCOLS = {
    "standard": VideoProtocol("standard", "I3D Kinetics-400 logits; first 16 frames per clip, 224x224 bilinear, "
                                          "[-1, 1]; one feature per clip"),
    "windows": VideoProtocol("windows", "I3D Kinetics-400 logits; every non-overlapping 16-frame window, 224x224 "
                                        "bilinear, [-1, 1]; one feature per window"),
    "ganime": VideoProtocol("ganime", "I3D Kinetics-400 logits; GANime: first frame excluded, clips under 9 frames "
                                      "padded with zero frames in front, whole clip, 224x224 bilinear, [-1, 1]"),
}
FID_DESCRIPTION = "Inception-v3 pool3 (2048-d, TF FID weights); every frame, 299x299 antialiased bicubic, [-1, 1]"


def as_clip(clip, input_name: str) -> torch.Tensor:
    """[T, H, W, C] frames (uint8 0..255 or float 0..1; C = 1, 3 or 4) -> float32 [T, H, W, 3] in 0..1."""
    if not isinstance(clip, torch.Tensor) or clip.ndim != 4 or clip.shape[-1] not in (1, 3, 4):
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise AnimeVideoInputError(f"{input_name}: expected frames [T, H, W, 3], got {shape}.")
    if clip.shape[0] == 0:
        raise AnimeVideoInputError(f"{input_name}: the clip has no frames.")
    x = clip.float() / 255.0 if clip.dtype == torch.uint8 else clip.float()
    if x.shape[-1] == 4:
        x = x[..., :3]
    elif x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    if not torch.isfinite(x).all():
        raise AnimeVideoInputError(f"{input_name}: the frames hold NaN or infinite values.")
    return x


def clip_windows(clip: torch.Tensor, protocol: str, input_name: str = "clip") -> list[torch.Tensor]:
    """The frame windows a protocol takes from one clip [T, H, W, 3] (0..1)."""
    t = clip.shape[0]
    if protocol == "standard":
        if t < WINDOW:
            raise AnimeVideoInputError(
                f"{input_name}: {t} frames; the standard FVD protocol scores the first {WINDOW} frames of each clip. "
                f"Give clips of at least {WINDOW} frames, or use the 'ganime' protocol (pads short clips).")
        return [clip[:WINDOW]]
    if protocol == "windows":
        if t < WINDOW:
            raise AnimeVideoInputError(f"{input_name}: {t} frames; the 'windows' protocol needs at least {WINDOW}.")
        return [clip[s:s + WINDOW] for s in range(0, t - WINDOW + 1, WINDOW)]
    if protocol == "ganime":
        if t < 2:
            raise AnimeVideoInputError(f"{input_name}: {t} frame; the GANime protocol drops the first frame and "
                                       "needs at least one more.")
        return [clip[1:]]
    raise AnimeVideoInputError(f"protocol: '{protocol}' is not one of {', '.join(VIDEO_PROTOCOLS)}.")


def i3d_input(windows: list[torch.Tensor], protocol: str, device, dtype) -> torch.Tensor:
    """Windows of equal length [t, H, W, 3] 0..1 -> [B, 3, t', 224, 224] in [-1, 1] on ``device``."""
    out = []
    for w in windows:
        x = w.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)  # frames as a batch of images
        x = F.interpolate(x, size=(i3d_net.INPUT_SIZE, i3d_net.INPUT_SIZE), mode="bilinear", align_corners=False)
        x = x * 2 - 1
        if protocol == "ganime" and x.shape[0] < GANIME_MIN_FRAMES:
            x = torch.cat([x.new_zeros(GANIME_MIN_FRAMES - x.shape[0], *x.shape[1:]), x])
        out.append(x.permute(1, 0, 2, 3))
    return torch.stack(out).to(dtype)


def inception_input(frames: torch.Tensor, device, dtype) -> torch.Tensor:
    """[n, H, W, 3] 0..1 -> [n, 3, 299, 299] in [-1, 1] (antialiased bicubic, clamped back into range)."""
    x = frames.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
    size = inception_net.INPUT_SIZE
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x * 2 - 1).to(dtype)


Progress = Callable[[int], None]


@torch.inference_mode()
def video_features(model, clips: Iterable[torch.Tensor], protocol: str = "standard", batch_size: int = 8,
                   device=None, dtype=torch.float32, on_clip: Progress | None = None,
                   check_interrupt: Callable[[], None] | None = None, input_name: str = "clips") -> torch.Tensor:
    """I3D features [windows, classes] (float64, CPU) of every window of every clip, ``batch_size`` at a time."""
    if protocol not in VIDEO_PROTOCOLS:
        raise AnimeVideoInputError(f"protocol: '{protocol}' is not one of {', '.join(VIDEO_PROTOCOLS)}.")
    device = device or model.device
    feats, pending = [], []
    # Batches run channels-last (NDHWC): oneDNN's and cuDNN's fast 3-D convolution layout; about 1.4x on a CPU
    # for batches of 8 (bench/metrics.py). A single clip is faster in the default layout, so only batches switch.
    layout = torch.channels_last_3d if batch_size > 1 else torch.contiguous_format

    def flush():
        while pending:  # equal-length windows share a batch (GANime's whole clips may differ)
            same = [w for w in pending if w.shape[0] == pending[0].shape[0]]
            rest = [w for w in pending if w.shape[0] != pending[0].shape[0]]
            x = i3d_input(same, protocol, device, dtype).contiguous(memory_format=layout)
            feats.append(model(x).double().cpu())
            pending[:] = rest

    count = 0
    model.to(memory_format=layout)
    try:
        for i, clip in enumerate(clips):
            if check_interrupt is not None:
                check_interrupt()
            clip = as_clip(clip, f"{input_name}[{i}]")
            for w in clip_windows(clip, protocol, f"{input_name}[{i}]"):
                pending.append(w)
                if len(pending) >= batch_size:
                    flush()
            count += 1
            if on_clip is not None:
                on_clip(count)
        flush()
    finally:
        model.to(memory_format=torch.contiguous_format)  # the shared model goes back as it came
    if not feats:
        raise AnimeVideoInputError(f"{input_name}: no clips to score.")
    return torch.cat(feats)


@torch.inference_mode()
def image_features(model, clips: Iterable[torch.Tensor], batch_size: int = 32, device=None, dtype=torch.float32,
                   on_clip: Progress | None = None, check_interrupt: Callable[[], None] | None = None,
                   input_name: str = "clips", skip_first: bool = False) -> torch.Tensor:
    """Inception pool3 features [frames, 2048] (float64, CPU) of every frame of every clip."""
    device = device or model.device
    feats = []
    count = 0
    for i, clip in enumerate(clips):
        if check_interrupt is not None:
            check_interrupt()
        clip = as_clip(clip, f"{input_name}[{i}]")
        if skip_first:
            clip = clip[1:]
        for start in range(0, clip.shape[0], batch_size):
            feats.append(model(inception_input(clip[start:start + batch_size], device, dtype)).double().cpu())
        count += 1
        if on_clip is not None:
            on_clip(count)
    if not feats:
        raise AnimeVideoInputError(f"{input_name}: no frames to score.")
    return torch.cat(feats)
