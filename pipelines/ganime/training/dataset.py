"""Clips for GANime training: scene split, the thesis' clip-length rule, 64x128 frames, shards.

Pipeline (thesis section 2.2 / 3.1): split each episode into scenes with PySceneDetect's content
detector (threshold 15, minimum scene 0.5 s, short scenes dropped, frames downscaled 4x for the
detection), drop the first 2 frames of every scene (the detector sometimes keeps a frame of the
previous shot), cut long scenes into clips of 15-25 frames by the rule of Table 1, resize every frame
to 64x128 (a squash, as the thesis did) and write the clips as uint8 safetensors shards plus a
``manifest.json``.

A folder of images counts as one scene that is already cut (no detection), so frames extracted by
any tool can be used without the optional extras. Videos need ``pip install scenedetect opencv-python``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import AnimeVideoInputError

MANIFEST = "manifest.json"
FORMAT = "animevideo-ganime-clips"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
EXTRAS_HINT = "pip install scenedetect opencv-python"


# ---------------------------------------------------------------------------------------------
# The clip-length rule (pure)
# ---------------------------------------------------------------------------------------------

def best_clip_length(n_frames: int, min_len: int = 15, max_len: int = 25) -> int:
    """The L in [min_len, max_len] (upper bound included) leaving the smallest ``n mod L``; ties go to
    the larger L. This is the rule that reproduces the thesis' Table 1."""
    best, best_rest = max_len, None
    for length in range(min_len, max_len + 1):
        rest = n_frames % length
        if best_rest is None or rest <= best_rest:
            best, best_rest = length, rest
    return best


def clip_lengths(n_frames: int, min_len: int = 15, max_len: int = 25) -> list[int]:
    """Lengths a scene of ``n_frames`` is cut into: ``n // L`` clips of L, the remainder added to the last
    clip; a scene shorter than L stays whole. Table 1: 30 -> 15, 15; 31 -> 15, 16; 51 -> 17, 17, 17."""
    if n_frames <= 0:
        return []
    length = best_clip_length(n_frames, min_len, max_len)
    pieces = n_frames // length
    if pieces == 0:
        return [n_frames]
    return [length] * (pieces - 1) + [length + n_frames % length]


def split_range(start: int, end: int, min_len: int = 15, max_len: int = 25) -> list[tuple[int, int]]:
    """[start, end) -> consecutive [s, e) clip ranges by ``clip_lengths``."""
    out, s = [], start
    for length in clip_lengths(end - start, min_len, max_len):
        out.append((s, s + length))
        s += length
    return out


@dataclass
class ClipRules:
    threshold: float = 15.0  # PySceneDetect content detector
    min_scene_seconds: float = 0.5
    drop_short_scenes: bool = True
    detect_downscale: int = 4
    drop_first: int = 2
    frame_step: int = 1  # keep every k-th frame (the original repo's tfrecord script kept every 2nd)
    min_clip: int = 15
    max_clip: int = 25
    min_frames: int = 3  # clips shorter than this are useless for training
    height: int = 64
    width: int = 128


def scene_clips(scenes: list[tuple[int, int]], fps: float, rules: ClipRules) -> list[list[int]]:
    """Scene frame ranges [start, end) -> clips as lists of source frame indices (pure)."""
    min_scene = int(math.ceil(rules.min_scene_seconds * fps)) if fps > 0 else 0
    clips = []
    for start, end in scenes:
        if rules.drop_short_scenes and end - start < min_scene:
            continue
        frames = list(range(start + rules.drop_first, end, max(1, rules.frame_step)))
        for s, e in split_range(0, len(frames), rules.min_clip, rules.max_clip):
            if e - s >= rules.min_frames:
                clips.append(frames[s:e])
    return clips


# ---------------------------------------------------------------------------------------------
# Optional extras (lazy)
# ---------------------------------------------------------------------------------------------

def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise AnimeVideoInputError(
            f"Preparing a dataset from video files needs the optional packages scenedetect and OpenCV "
            f"({module} is missing): {EXTRAS_HINT}. A folder of frames (one scene) needs neither.") from None


def detect_scenes(video_path: str, rules: ClipRules) -> tuple[list[tuple[int, int]], float]:
    """PySceneDetect content detection -> ([start, end) frame ranges, fps)."""
    _require("cv2")
    scenedetect = _require("scenedetect")
    from scenedetect import SceneManager, open_video
    from scenedetect.detectors import ContentDetector

    video = open_video(video_path)
    fps = float(video.frame_rate)
    manager = SceneManager()
    manager.auto_downscale = False
    manager.downscale = max(1, rules.detect_downscale)
    manager.add_detector(ContentDetector(threshold=rules.threshold,
                                         min_scene_len=max(1, int(math.ceil(rules.min_scene_seconds * fps)))))
    manager.detect_scenes(video)
    scenes = [(a.get_frames(), b.get_frames()) for a, b in manager.get_scene_list()]
    if not scenes:  # no cut at all: the whole video is one scene
        n = int(video.duration.get_frames()) if video.duration is not None else 0
        scenes = [(0, n)] if n else []
    del scenedetect
    return scenes, fps


def read_video_frames(video_path: str, indices: list[int], rules: ClipRules) -> np.ndarray:
    """The given frame indices (ascending), resized, as uint8 [n, H, W, 3] RGB."""
    cv2 = _require("cv2")
    cap = cv2.VideoCapture(video_path)
    wanted, out, i = set(indices), [], 0
    last = max(indices)
    try:
        while i <= last:
            ok, frame = cap.read()
            if not ok:
                break
            if i in wanted:
                frame = cv2.resize(frame, (rules.width, rules.height), interpolation=cv2.INTER_AREA)
                out.append(frame[:, :, ::-1])
            i += 1
    finally:
        cap.release()
    if len(out) != len(indices):
        raise AnimeVideoInputError(f"'{video_path}': could only read {len(out)} of {len(indices)} frames.")
    return np.ascontiguousarray(np.stack(out))


def read_image_folder(folder: str, rules: ClipRules) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    frames = []
    for f in files:
        with Image.open(os.path.join(folder, f)) as im:
            im = im.convert("RGB").resize((rules.width, rules.height), Image.Resampling.BICUBIC, reducing_gap=2.0)
            frames.append(np.asarray(im, dtype=np.uint8))
    return np.stack(frames) if frames else np.zeros((0, rules.height, rules.width, 3), np.uint8)


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------

class ShardWriter:
    def __init__(self, out_dir: str, rules: ClipRules, clips_per_shard: int = 256):
        if os.path.exists(os.path.join(out_dir, MANIFEST)):
            raise AnimeVideoInputError(f"'{out_dir}' already holds a dataset ({MANIFEST}); choose an empty folder.")
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.rules, self.per_shard = out_dir, rules, clips_per_shard
        self.pending: dict[str, torch.Tensor] = {}
        self.clips: list[dict] = []
        self.shard = 0

    def add(self, frames: np.ndarray, source: str, frame_indices: list[int] | None = None):
        if frames.ndim != 4 or frames.shape[1:] != (self.rules.height, self.rules.width, 3):
            raise ValueError(f"clip frames must be [n, {self.rules.height}, {self.rules.width}, 3], got {frames.shape}")
        key = f"clip_{len(self.clips):07d}"
        self.pending[key] = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8))
        self.clips.append({"shard": self._shard_name(), "key": key, "frames": int(frames.shape[0]), "source": source,
                           "first_frame": int(frame_indices[0]) if frame_indices else 0})
        if len(self.pending) >= self.per_shard:
            self._flush()

    def _shard_name(self) -> str:
        return f"shard_{self.shard:05d}.safetensors"

    def _flush(self):
        if not self.pending:
            return
        from safetensors.torch import save_file

        save_file(self.pending, os.path.join(self.out_dir, self._shard_name()))
        self.pending = {}
        self.shard += 1

    def close(self) -> str:
        self._flush()
        manifest = {"format": FORMAT, "version": 1, "height": self.rules.height, "width": self.rules.width,
                    "rules": self.rules.__dict__, "clips": self.clips}
        path = os.path.join(self.out_dir, MANIFEST)
        with open(path, "w") as f:
            json.dump(manifest, f, indent=1)
        return path


@dataclass
class ClipDataset:
    """The clips of a prepared dataset folder; frames as uint8 [n, H, W, 3] tensors."""

    root: str
    manifest: dict = field(default_factory=dict)

    def __post_init__(self):
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            raise AnimeVideoInputError(f"'{self.root}' is not a GANime dataset (no {MANIFEST}); make one with "
                                       "scripts/ganime_prepare_dataset.py.")
        with open(path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != FORMAT:
            raise AnimeVideoInputError(f"'{path}' is not a GANime clip manifest.")
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def clips(self) -> list[dict]:
        return self.manifest["clips"]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.manifest["height"]), int(self.manifest["width"])

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        info = self.clips[i]
        shard = self._cache.get(info["shard"])
        if shard is None:
            from safetensors.torch import load_file

            shard = self._cache[info["shard"]] = load_file(os.path.join(self.root, info["shard"]))
        return shard[info["key"]]


# ---------------------------------------------------------------------------------------------
# The whole preparation
# ---------------------------------------------------------------------------------------------

def list_inputs(paths: list[str]) -> list[tuple[str, str]]:
    """(kind, path) for each input: 'video' files, or 'frames' folders (one scene each)."""
    out = []
    for p in paths:
        if os.path.isfile(p):
            if not p.lower().endswith(VIDEO_EXTENSIONS):
                raise AnimeVideoInputError(f"'{p}' is not a video file ({', '.join(VIDEO_EXTENSIONS)}).")
            out.append(("video", p))
        elif os.path.isdir(p):
            entries = sorted(os.listdir(p))
            if any(e.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
                out.append(("frames", p))
            else:
                sub = [os.path.join(p, e) for e in entries]
                out.extend(("video", s) for s in sub if os.path.isfile(s) and s.lower().endswith(VIDEO_EXTENSIONS))
                out.extend(("frames", s) for s in sub if os.path.isdir(s) and
                           any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(s)))
        else:
            raise AnimeVideoInputError(f"'{p}' does not exist.")
    if not out:
        raise AnimeVideoInputError("no videos or frame folders found in the inputs.")
    return out


def prepare_dataset(inputs: list[str], out_dir: str, rules: ClipRules | None = None, clips_per_shard: int = 256,
                    progress: bool = True) -> dict:
    rules = rules or ClipRules()
    items = list_inputs(inputs)
    writer = ShardWriter(out_dir, rules, clips_per_shard)
    stats = {"inputs": len(items), "scenes": 0, "clips": 0, "frames": 0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="GANime dataset", unit="input")
    for kind, path in items:
        if kind == "frames":
            frames = read_image_folder(path, rules)
            clips = scene_clips([(0, len(frames))], fps=0.0, rules=rules)
            stats["scenes"] += 1
            for idx in clips:
                writer.add(frames[idx], path, idx)
                stats["clips"] += 1
                stats["frames"] += len(idx)
        else:
            scenes, fps = detect_scenes(path, rules)
            stats["scenes"] += len(scenes)
            for idx in scene_clips(scenes, fps, rules):
                writer.add(read_video_frames(path, idx, rules), path, idx)
                stats["clips"] += 1
                stats["frames"] += len(idx)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(clips=stats["clips"])
    if bar is not None:
        bar.close()
    stats["manifest"] = writer.close()
    return stats


# ---------------------------------------------------------------------------------------------
# Synthetic clips (tests, benchmarks)
# ---------------------------------------------------------------------------------------------

def moving_square_clip(n_frames: int, height: int, width: int, start: tuple[float, float], end: tuple[float, float],
                       side: float = 0.3, colour=(250, 200, 40), background=(30, 40, 90)) -> np.ndarray:
    """A square moving in a straight line from ``start`` to ``end`` (centres as fractions of the frame)."""
    out = np.empty((n_frames, height, width, 3), np.uint8)
    out[:] = background
    s = max(1, int(round(side * height)))
    for i in range(n_frames):
        t = i / (n_frames - 1) if n_frames > 1 else 0.0
        cy = (start[0] + (end[0] - start[0]) * t) * height
        cx = (start[1] + (end[1] - start[1]) * t) * width
        y0, x0 = int(round(cy - s / 2)), int(round(cx - s / 2))
        out[i, max(0, y0):max(0, y0 + s), max(0, x0):max(0, x0 + s)] = colour
    return out


def write_synthetic_dataset(out_dir: str, n_clips: int = 8, n_frames: int = 6, height: int = 16, width: int = 32,
                            seed: int = 0) -> str:
    """A shape moving between two positions (left-right or right-left, a few heights)."""
    rng = np.random.default_rng(seed)
    rules = ClipRules(height=height, width=width)
    writer = ShardWriter(out_dir, rules, clips_per_shard=max(1, n_clips))
    for i in range(n_clips):
        y = float(rng.choice([0.35, 0.5, 0.65]))
        a, b = (y, 0.2), (y, 0.8)
        if i % 2:
            a, b = b, a
        writer.add(moving_square_clip(n_frames, height, width, a, b), "synthetic", list(range(n_frames)))
    return writer.close()
