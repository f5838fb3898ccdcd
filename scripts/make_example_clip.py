#!/usr/bin/env python3
"""Draw the example clip the upscale and interpolation workflows load: a short animated PNG (APNG).

    python scripts/make_example_clip.py [OUT_DIR]     (default: example_inputs/ next to this script)

A red ball with ink outlines bounces across a flat-colour landscape, 256x144 px, 12 frames at
12 fps, animated "on twos": 6 drawings, each held for exactly 2 frames, as hand-drawn anime
usually is. The held frames are pixel-identical, so AnimeVideo Interpolate's dedup sees
6 drawings.

ComfyUI's core Load Image node reads every frame of a multi-frame image into one IMAGE batch,
so this one file is the clip input of the workflows.

Pillow's own APNG writer merges identical consecutive frames into one longer frame (it would
store 6 frames, not 12), so the file is written here chunk by chunk: every frame is a full
frame (fcTL + IDAT/fdAT), no frame merging, no metadata chunks, a fixed zlib level. The same
Pillow and zlib versions therefore write byte-identical files; everything is drawn from fixed
coordinates (no randomness, no fonts).
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = "animevideo_example_clip_on_twos.png"
WIDTH, HEIGHT = 256, 144
FPS = 12
DRAWINGS = 6
HOLD = 2  # "on twos": each drawing is shown for this many frames
NUM_FRAMES = DRAWINGS * HOLD
SS = 4  # supersampling factor: drawn at 4x, downsampled once for clean anti-aliased outlines

INK = (38, 30, 48)
SKY_BANDS = [(104, 162, 232), (128, 182, 240), (156, 202, 246), (186, 220, 250)]
SUN = (255, 236, 170)
CLOUD = (252, 252, 255)
CLOUD_SHADE = (214, 226, 246)
HILL_BACK = (108, 182, 120)
HILL_FRONT = (140, 208, 116)
PATH = (236, 214, 168)
TREE_TRUNK = (122, 86, 64)
TREE_LEAVES = (72, 150, 96)
BALL = (232, 72, 84)
BALL_SHADE = (190, 48, 70)
BALL_SHINE = (255, 236, 236)
SHADOW = (104, 160, 96)

GROUND_Y = 118  # where the ball's shadow sits (output px)
BALL_R = 13


def s(values):
    """Output-pixel coordinates -> supersampled canvas coordinates."""
    return [round(v * SS) for v in values]


def outline_width(px: float = 1.0) -> int:
    return max(1, round(px * SS))


def ellipse(d, box, fill, ink=True, width=1.0):
    d.ellipse(s(box), fill=fill, outline=INK if ink else None, width=outline_width(width))


def poly(d, points, fill, ink=True, width=1.0):
    pts = [(round(x * SS), round(y * SS)) for x, y in points]
    d.polygon(pts, fill=fill, outline=INK if ink else None, width=outline_width(width) if ink else 0)


def draw_background(d):
    band = HEIGHT / (len(SKY_BANDS) + 2)
    for i, colour in enumerate(SKY_BANDS):
        d.rectangle(s([-2, i * band, WIDTH + 2, (i + 1) * band + 1]), fill=colour)
    d.rectangle(s([-2, len(SKY_BANDS) * band, WIDTH + 2, HEIGHT + 2]), fill=SKY_BANDS[-1])
    ellipse(d, [204, 12, 232, 40], SUN)
    # a cloud: overlapping puffs with one outline around the group
    for box in ([30, 22, 58, 44], [46, 14, 78, 44], [66, 22, 92, 44]):
        ellipse(d, box, CLOUD)
    for box in ([31, 23, 57, 43], [47, 15, 77, 43], [67, 23, 91, 43]):
        ellipse(d, box, CLOUD, ink=False)
    d.rectangle(s([38, 36, 84, 43]), fill=CLOUD_SHADE)
    # hills, a path and a tree
    d.chord(s([-60, 70, 150, 190]), 180, 360, fill=HILL_BACK, outline=INK, width=outline_width())
    d.chord(s([110, 78, 330, 200]), 180, 360, fill=HILL_BACK, outline=INK, width=outline_width())
    d.rectangle(s([-2, 104, WIDTH + 2, HEIGHT + 2]), fill=HILL_FRONT)
    d.line(s([-2, 104, WIDTH + 2, 104]), fill=INK, width=outline_width())
    poly(d, [(112, 104), (140, 104), (170, HEIGHT + 2), (84, HEIGHT + 2)], PATH)
    poly(d, [(196, 104), (199, 80), (205, 80), (208, 104)], TREE_TRUNK)
    ellipse(d, [182, 52, 222, 88], TREE_LEAVES)


# Height of the ball's bottom above the ground in each drawing: it drops in, lands (squashed) and bounces up.
BALL_HEIGHTS = (58, 34, 0, 26, 42, 48)


def ball_position(k: int) -> tuple[float, float, float, float]:
    """Centre x, centre y and radii (rx, ry) of the ball in drawing k: left to right, squashed on landing."""
    x = 30 + k * (WIDTH - 60) / (DRAWINGS - 1)
    height = BALL_HEIGHTS[k]
    rx, ry = (BALL_R * 1.18, BALL_R * 0.82) if height == 0 else (BALL_R, BALL_R)
    return x, GROUND_Y - height - ry, rx, ry


def draw_ball(d, k: int):
    x, y, rx, ry = ball_position(k)
    # shadow on the ground, smaller while the ball is high
    sw = BALL_R * (1.15 - 0.5 * BALL_HEIGHTS[k] / max(BALL_HEIGHTS))
    ellipse(d, [x - sw, GROUND_Y - 3, x + sw, GROUND_Y + 3], SHADOW, ink=False)
    ellipse(d, [x - rx, y - ry, x + rx, y + ry], BALL, width=1.25)
    # cel shading: a darker crescent lower down, a shine upper left, a seam line
    d.chord(s([x - rx + 1.5, y - ry + 1.5, x + rx - 1.5, y + ry - 1.5]), 20, 160, fill=BALL_SHADE)
    ellipse(d, [x - rx * 0.6, y - ry * 0.7, x - rx * 0.1, y - ry * 0.25], BALL_SHINE, ink=False)
    d.line(s([x - rx + 1, y, x + rx - 1, y]), fill=INK, width=outline_width(0.75))


def draw_drawing(k: int) -> Image.Image:
    img = Image.new("RGB", (WIDTH * SS, HEIGHT * SS), SKY_BANDS[0])
    d = ImageDraw.Draw(img)
    draw_background(d)
    draw_ball(d, k)
    return img.resize((WIDTH, HEIGHT), Image.LANCZOS)


def clip_frames() -> list[Image.Image]:
    """The NUM_FRAMES frames, in order: each of the DRAWINGS drawings HOLD times (the same pixels)."""
    drawings = [draw_drawing(k) for k in range(DRAWINGS)]
    return [drawings[i // HOLD] for i in range(NUM_FRAMES)]


# ---------------------------------------------------------------------------------------------
# A minimal APNG writer (PNG spec + APNG extension: acTL, fcTL, fdAT)
# ---------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _compressed_scanlines(rgb: np.ndarray) -> bytes:
    """Filter every row with 'Sub' (type 1), which suits flat colours, and deflate at a fixed level."""
    rows = rgb.astype(np.uint8).reshape(rgb.shape[0], -1)
    left = np.zeros_like(rows)
    left[:, 3:] = rows[:, :-3]
    filtered = (rows.astype(np.int16) - left).astype(np.uint8)
    raw = np.concatenate([np.ones((rows.shape[0], 1), np.uint8), filtered], axis=1)
    return zlib.compress(raw.tobytes(), 9)


def write_apng(path: str, frames: list[Image.Image], fps: int) -> None:
    w, h = frames[0].size
    out = [b"\x89PNG\r\n\x1a\n",
           _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
           _chunk(b"acTL", struct.pack(">II", len(frames), 0))]
    seq = 0
    for i, frame in enumerate(frames):
        assert frame.size == (w, h) and frame.mode == "RGB"
        # full-size frame at (0, 0), delay 1/fps s, dispose none, blend source
        out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0, 0, 1, fps, 0, 0)))
        seq += 1
        data = _compressed_scanlines(np.asarray(frame))
        if i == 0:
            out.append(_chunk(b"IDAT", data))  # the first frame is also the static image
        else:
            out.append(_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    out.append(_chunk(b"IEND", b""))
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(b"".join(out))
    os.replace(tmp, path)


def write_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, CLIP)
    write_apng(path, clip_frames(), FPS)
    return [path]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "example_inputs"))
    args = ap.parse_args(argv)
    for path in write_all(args.out_dir):
        print(f"{path}: {os.path.getsize(path)} bytes, {NUM_FRAMES} frames ({DRAWINGS} drawings on twos), "
              f"{WIDTH}x{HEIGHT} @ {FPS} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
