#!/usr/bin/env python3
"""Draw the two example keyframes the GANime workflow loads (flat anime-style art, made with PIL).

    python scripts/make_ganime_examples.py [OUT_DIR]     (default: examples/ next to this script)

The same scene twice, 512x256 (GANime's 2:1 frame, so the model's squash keeps the proportions): the
girl stands on the left looking ahead in the first keyframe, and on the right, waving with her eyes
closed in a smile, in the last. The palette and drawing primitives come from scripts/make_example_images.py
(fixed coordinates, no randomness or fonts, drawn at 2x and downsampled once); the character gains a pose.
"""
from __future__ import annotations

import argparse
import os
import sys

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_example_images import (  # noqa: E402  (the shared palette and drawing primitives)
    BLUSH,
    cloud,
    COLLAR,
    draw_hills,
    draw_mountains,
    draw_sky,
    ellipse,
    EYE,
    EYE_LIGHT,
    HAIR,
    HAIR_SHADE,
    HAIR_SHINE,
    INK,
    outline_width,
    poly,
    RIBBON,
    s,
    SHIRT,
    SKIN,
    SKIN_SHADE,
    SKIRT,
    SKY_BANDS,
    SS,
    tree,
)
FIRST_KEYFRAME = "animevideo_example_keyframe_first.png"
LAST_KEYFRAME = "animevideo_example_keyframe_last.png"
OUT_WIDTH, OUT_HEIGHT = 512, 256
CROP_TOP = 56  # rows of the 1024x576 design kept: [56, 568), a 2:1 window
WIDTH, HEIGHT = 1024, 576


def draw_character(d, cx=330, top=170, wave=False, smile=False):
    """A chibi girl with pink twin-tails, facing the viewer, standing on the hill; optionally waving
    (right arm raised) and smiling with closed eyes."""
    # twin-tails behind the head
    poly(d, [(cx - 92, top + 70), (cx - 140, top + 170), (cx - 128, top + 250), (cx - 96, top + 200),
             (cx - 70, top + 120)], HAIR)
    poly(d, [(cx + 92, top + 70), (cx + 140, top + 170), (cx + 128, top + 250), (cx + 96, top + 200),
             (cx + 70, top + 120)], HAIR)
    # body: skirt, shirt, sailor collar, ribbon
    poly(d, [(cx - 58, top + 250), (cx + 58, top + 250), (cx + 84, top + 330), (cx - 84, top + 330)], SKIRT)
    poly(d, [(cx - 46, top + 176), (cx + 46, top + 176), (cx + 62, top + 258), (cx - 62, top + 258)], SHIRT)
    poly(d, [(cx - 46, top + 176), (cx + 46, top + 176), (cx + 30, top + 212), (cx, top + 226),
             (cx - 30, top + 212)], COLLAR)
    poly(d, [(cx, top + 214), (cx - 22, top + 202), (cx - 22, top + 230)], RIBBON, w=2)
    poly(d, [(cx, top + 214), (cx + 22, top + 202), (cx + 22, top + 230)], RIBBON, w=2)
    # arms and legs
    poly(d, [(cx - 46, top + 182), (cx - 74, top + 250), (cx - 60, top + 256), (cx - 38, top + 200)], SHIRT)
    if wave:  # right arm up beside the head
        poly(d, [(cx + 44, top + 184), (cx + 96, top + 120), (cx + 108, top + 132), (cx + 52, top + 202)], SHIRT)
        ellipse(d, [cx + 94, top + 100, cx + 120, top + 126], SKIN, w=2.5)
    else:
        poly(d, [(cx + 46, top + 182), (cx + 74, top + 250), (cx + 60, top + 256), (cx + 38, top + 200)], SHIRT)
        ellipse(d, [cx + 56, top + 246, cx + 80, top + 268], SKIN, w=2.5)
    ellipse(d, [cx - 80, top + 246, cx - 56, top + 268], SKIN, w=2.5)
    for sx in (-1, 1):
        poly(d, [(cx + sx * 18, top + 330), (cx + sx * 38, top + 330), (cx + sx * 36, top + 376),
                 (cx + sx * 20, top + 376)], SKIN, w=2.5)
        d.rounded_rectangle(s([cx + sx * 29 - 16, top + 372, cx + sx * 29 + 16, top + 390]), radius=s(8),
                            fill=COLLAR, outline=INK, width=outline_width(2.5))
    # head
    ellipse(d, [cx - 90, top, cx + 90, top + 186], SKIN)
    ellipse(d, [cx - 88, top + 120, cx + 88, top + 186], SKIN_SHADE, ink=False)
    ellipse(d, [cx - 84, top + 100, cx + 84, top + 176], SKIN, ink=False)
    # hair cap and bangs
    d.chord(s([cx - 98, top - 12, cx + 98, top + 170]), 180, 360, fill=HAIR, outline=INK, width=outline_width())
    fringe = [(cx - 96, top + 80), (cx - 70, top + 126), (cx - 52, top + 76), (cx - 26, top + 112),
              (cx - 4, top + 70), (cx + 22, top + 110), (cx + 46, top + 72), (cx + 70, top + 124),
              (cx + 96, top + 80)]
    poly(d, fringe + [(cx + 86, top + 40), (cx - 86, top + 40)], HAIR, ink=False)
    d.rectangle(s([cx - 92, top + 40, cx + 92, top + 84]), fill=HAIR)
    d.line([tuple(s(p)) for p in fringe], fill=INK, width=outline_width(), joint="curve")
    poly(d, [(cx - 50, top + 26), (cx - 20, top + 16), (cx - 30, top + 32)], HAIR_SHINE, ink=False)
    poly(d, [(cx + 20, top + 20), (cx + 54, top + 30), (cx + 36, top + 38)], HAIR_SHINE, ink=False)
    # hair ties
    ellipse(d, [cx - 104, top + 60, cx - 80, top + 84], RIBBON, w=2.5)
    ellipse(d, [cx + 80, top + 60, cx + 104, top + 84], RIBBON, w=2.5)
    # face: big anime eyes, blush, mouth
    for sx in (-1, 1):
        ex = cx + sx * 40
        if smile:  # closed happy eyes: an upward arc
            d.arc(s([ex - 16, top + 118, ex + 16, top + 146]), 200, 340, fill=INK, width=outline_width(4))
        else:
            ellipse(d, [ex - 17, top + 104, ex + 17, top + 150], EYE, w=3)
            ellipse(d, [ex - 9, top + 118, ex + 9, top + 146], INK, ink=False)
            ellipse(d, [ex - 12, top + 110, ex - 2, top + 122], EYE_LIGHT, ink=False)
            ellipse(d, [ex + 3, top + 132, ex + 9, top + 138], EYE_LIGHT, ink=False)
        d.line([tuple(s((ex - 20, top + 102))), tuple(s((ex + 20, top + 100)))], fill=INK, width=outline_width(4))
        ellipse(d, [ex + sx * 10 - 14, top + 150, ex + sx * 10 + 14, top + 160], BLUSH, ink=False)
    if smile:  # open smiling mouth
        d.chord(s([cx - 14, top + 150, cx + 14, top + 172]), 0, 180, fill=RIBBON, outline=INK, width=outline_width(2.5))
    else:
        d.arc(s([cx - 12, top + 150, cx + 12, top + 166]), 20, 160, fill=INK, width=outline_width(2.5))
    # hair shade strands over the tails
    for sx in (-1, 1):
        d.line([tuple(s((cx + sx * 110, top + 130))), tuple(s((cx + sx * 124, top + 210)))],
               fill=HAIR_SHADE, width=outline_width(3))


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
