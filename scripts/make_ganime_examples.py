#!/usr/bin/env python3
"""Draw the two example keyframes the GANime workflow loads (flat anime-style art, made with PIL).

    python scripts/make_ganime_examples.py [OUT_DIR]     (default: examples/ next to this script)

The same scene twice, 512x256 (GANime's 2:1 frame, so the model's squash keeps the proportions): the
girl stands on the left looking ahead in the first keyframe, and on the right, waving with her eyes
closed in a smile, in the last. The palette and drawing primitives come from scripts/make_example_images.py
(fixed coordinates, no randomness or fonts, drawn at 2x and downsampled once), the character with its pose options.
"""
from __future__ import annotations

import argparse
import os
import sys

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_example_images import (  # noqa: E402  (the shared scene, character and palette)
    cloud,
    draw_character,
    draw_hills,
    draw_mountains,
    draw_sky,
    SKY_BANDS,
    SS,
    tree,
)
FIRST_KEYFRAME = "animevideo_example_keyframe_first.png"
LAST_KEYFRAME = "animevideo_example_keyframe_last.png"
OUT_WIDTH, OUT_HEIGHT = 512, 256
CROP_TOP = 56  # rows of the 1024x576 design kept: [56, 568), a 2:1 window
WIDTH, HEIGHT = 1024, 576


def draw_keyframe(cx: int, wave: bool, smile: bool) -> Image.Image:
    img = Image.new("RGB", (WIDTH * SS, HEIGHT * SS), SKY_BANDS[0])
    d = ImageDraw.Draw(img)
    draw_sky(d)
    cloud(d, 90, 60, 1.0)
    cloud(d, 520, 100, 0.8)
    cloud(d, 900, 190, 0.6)
    draw_mountains(d)
    draw_hills(d)
    tree(d, 860, 440, 1.2)
    tree(d, 960, 410, 0.9)
    tree(d, 90, 430, 1.0)
    draw_character(d, cx=cx, wave=wave, smile=smile)
    img = img.crop((0, CROP_TOP * SS, WIDTH * SS, (CROP_TOP + WIDTH // 2) * SS))
    return img.resize((OUT_WIDTH, OUT_HEIGHT), Image.Resampling.LANCZOS)


def draw_first_keyframe() -> Image.Image:
    return draw_keyframe(cx=300, wave=False, smile=False)


def draw_last_keyframe() -> Image.Image:
    return draw_keyframe(cx=620, wave=True, smile=True)


def write_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, draw in ((FIRST_KEYFRAME, draw_first_keyframe), (LAST_KEYFRAME, draw_last_keyframe)):
        path = os.path.join(out_dir, name)
        # No metadata chunks and a fixed compression level keep the bytes reproducible.
        draw().save(path, format="PNG", optimize=True)
        paths.append(path)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "examples"))
    args = ap.parse_args(argv)
    for p in write_all(args.out_dir):
        print(f"{p} ({os.path.getsize(p) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
