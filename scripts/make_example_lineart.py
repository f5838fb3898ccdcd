#!/usr/bin/env python3
"""Write the lineart example the LVCD workflow loads: the example clip's ink outlines as black lines on white.

    python scripts/make_example_lineart.py [OUT_DIR]     (default: example_inputs/)

The clip (scripts/make_example_clip.py) is drawn with ink outlines of one colour (INK), so its lineart is
exact without any model: a pixel's darkness is how close it is to INK. 12 frames, 256x144, like the clip,
written with the clip's byte-stable APNG writer. Black on white, as a user's scanned or tablet lineart would
be; AnimeVideo LVCD Colorize detects the polarity.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_example_clip as clip  # noqa: E402

LINEART = "animevideo_example_lineart_on_twos.png"


def lineart_frames() -> list[Image.Image]:
    ink = np.array(clip.INK, dtype=np.float32)
    out = []
    for frame in clip.clip_frames():
        rgb = np.asarray(frame.convert("RGB"), dtype=np.float32)
        dist = np.sqrt(((rgb - ink) ** 2).sum(-1))  # 0 on the ink, large on the colours
        line = np.clip(1.0 - dist / 120.0, 0.0, 1.0)
        grey = np.round(255.0 * (1.0 - line)).astype(np.uint8)
        out.append(Image.fromarray(np.stack([grey] * 3, -1), "RGB"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(clip.ROOT, "example_inputs"))
    args = ap.parse_args(argv)
    path = os.path.join(args.out_dir, LINEART)
    clip.write_apng(path, lineart_frames(), clip.FPS)
    print(f"{path}: {os.path.getsize(path)} bytes, {clip.NUM_FRAMES} frames, {clip.WIDTH}x{clip.HEIGHT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
