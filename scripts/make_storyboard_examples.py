#!/usr/bin/env python3
"""Draw the two middle keyframes of the storyboard workflow (anisora_core_storyboard): the scene of the GANime
keyframes with the girl a third and two thirds of the way across.

    python scripts/make_storyboard_examples.py [OUT_DIR]     (default: example_inputs/)

With animevideo_example_keyframe_first.png (standing on the left) and ..._last.png (on the right, waving and
smiling) they make four storyboard panels: walking (frame 24 of 81), raising her hand (frame 56).
Drawn by scripts/make_ganime_examples.py's draw_keyframe (fixed coordinates, no randomness or fonts).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ganime_examples import FIRST_KEYFRAME, LAST_KEYFRAME, draw_keyframe  # noqa: E402

# (file, girl's centre x in the 1024-wide design, waving, smiling); first 300, last 620
MIDDLE_KEYFRAMES = (("animevideo_example_keyframe_third.png", 407, False, False),
                    ("animevideo_example_keyframe_two_thirds.png", 513, True, False))
PANELS = (FIRST_KEYFRAME,) + tuple(name for name, *_ in MIDDLE_KEYFRAMES) + (LAST_KEYFRAME,)


def write_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, cx, wave, smile in MIDDLE_KEYFRAMES:
        path = os.path.join(out_dir, name)
        # No metadata chunks and a fixed compression level keep the bytes reproducible.
        draw_keyframe(cx=cx, wave=wave, smile=smile).save(path, format="PNG", optimize=True)
        paths.append(path)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "example_inputs"))
    args = ap.parse_args(argv)
    for p in write_all(args.out_dir):
        print(f"{p} ({os.path.getsize(p) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
