"""Clip sets on disk: a folder of videos and/or frame folders, read one clip at a time.

A set folder holds any mix of
- video files (.mp4 .webm .mkv .mov .avi .gif), read with PyAV (ComfyUI's own video library);
- animated images (.png APNG, .webp, .gif through Pillow when PyAV is absent) and single images, one clip each
  when they hold several frames;
- sub-folders of frames (.png .jpg .jpeg .webp .bmp), one clip per sub-folder, frames in name order
  (numbers compared as numbers: frame2 before frame10).
A folder that holds only loose still images and no sub-folders or videos is one clip of those frames.
Clips are matched between two sets by name (file stem or folder name) for the frame-by-frame metrics.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageSequence

from ..errors import AnimeVideoInputError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def natural_key(name: str):
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class ClipSource:
    name: str
    path: str
    kind: str  # "video", "image" (one file, maybe animated), "frames" (a folder of images)


def _images_in(folder: str) -> list[str]:
    return sorted((f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, f))), key=natural_key)


def list_clips(folder: str, input_name: str = "folder") -> list[ClipSource]:
    if not os.path.isdir(folder):
        raise AnimeVideoInputError(f"{input_name}: '{folder}' is not a folder.")
    entries = sorted(os.listdir(folder), key=natural_key)
    videos, subfolders, images = [], [], []
    for e in entries:
        p = os.path.join(folder, e)
        if os.path.isdir(p) and _images_in(p):
            subfolders.append(ClipSource(e, p, "frames"))
        elif os.path.isfile(p) and e.lower().endswith(VIDEO_EXTENSIONS):
            videos.append(ClipSource(os.path.splitext(e)[0], p, "video"))
        elif os.path.isfile(p) and e.lower().endswith(IMAGE_EXTENSIONS):
            images.append(ClipSource(os.path.splitext(e)[0], p, "image"))
    if not (videos or subfolders or images):
        raise AnimeVideoInputError(
            f"{input_name}: '{folder}' holds no clips: put videos ({', '.join(VIDEO_EXTENSIONS)}), animated images or "
            f"one sub-folder of frames ({', '.join(IMAGE_EXTENSIONS)}) per clip in it.")
    if images and not (videos or subfolders) and not any(_frame_count(s.path) > 1 for s in images[:1]):
        return [ClipSource(os.path.basename(os.path.normpath(folder)), folder, "frames")]
    return videos + subfolders + images


def _frame_count(path: str) -> int:
    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except OSError:
        return 1


def _rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_clip(source: ClipSource, max_frames: int = 0) -> torch.Tensor:
    """uint8 [T, H, W, 3]; ``max_frames`` > 0 stops reading after that many frames."""
    frames: list[np.ndarray] = []
    limit = max_frames if max_frames and max_frames > 0 else None
    try:
        if source.kind == "frames":
            for name in _images_in(source.path)[:limit]:
                with Image.open(os.path.join(source.path, name)) as im:
                    frames.append(_rgb(im))
        elif source.kind == "image":
            with Image.open(source.path) as im:
                for frame in ImageSequence.Iterator(im):
                    frames.append(_rgb(frame))
                    if limit and len(frames) >= limit:
                        break
        else:
            frames = _read_video(source.path, limit)
    except (OSError, ValueError) as e:
        raise AnimeVideoInputError(f"clip '{source.name}': could not read '{source.path}': {e}") from None
    if not frames:
        raise AnimeVideoInputError(f"clip '{source.name}': '{source.path}' has no frames.")
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise AnimeVideoInputError(f"clip '{source.name}': its frames differ in size ({sorted(sizes)[:2]}); every frame "
                                   "of a clip must have the same size.")
    return torch.from_numpy(np.stack(frames))


def _read_video(path: str, limit: int | None) -> list[np.ndarray]:
    try:
        import av
    except ImportError:
        raise AnimeVideoInputError(
            f"'{os.path.basename(path)}': reading video files needs PyAV (ComfyUI installs it; elsewhere "
            "`pip install av`), or give folders of frames.") from None
    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(format="rgb24"))
            if limit and len(out) >= limit:
                break
    return out


def iter_clips(sources: list[ClipSource], max_frames: int = 0):
    for s in sources:
        yield read_clip(s, max_frames)
