#!/usr/bin/env python3
"""Draw the example input images the shipped workflows load (flat anime-style art, made with PIL).

    python scripts/make_example_images.py [OUT_DIR]     (default: example_inputs/ next to this script)

Everything is drawn from fixed coordinates (no randomness, no fonts), so the same Pillow version
writes byte-identical files. The art is drawn at 2x and downsampled once, which gives clean,
anti-aliased outlines while the flat colours keep the PNG small.
"""
from __future__ import annotations

import argparse
import os
import sys

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_FRAME = "animevideo_example_first_frame.png"
# The first frame with an alpha mask, as ComfyUI's mask editor saves one: transparent = painted. Load
# Image's MASK output is 1 - alpha, so the painted (transparent) region is the mask's 1 = may move.
MASKED_FRAME = "animevideo_example_masked.png"
MOTION_REGION = [170, 140, 490, 576]  # design-space ellipse box around the girl (cx 330)
WIDTH, HEIGHT = 1024, 576
SS = 2  # supersampling factor

INK = (38, 30, 48)
SKY_BANDS = [(92, 152, 228), (116, 172, 238), (142, 192, 244), (170, 210, 248), (198, 226, 250)]
SUN = (255, 236, 170)
CLOUD = (252, 252, 255)
CLOUD_SHADE = (214, 226, 246)
MOUNTAIN_FAR = (140, 150, 206)
MOUNTAIN_SNOW = (236, 240, 255)
HILL_BACK = (108, 182, 120)
HILL_FRONT = (132, 204, 112)
GRASS_TUFT = (96, 164, 88)
PATH = (236, 214, 168)
TREE_TRUNK = (122, 86, 64)
TREE_LEAVES = (72, 150, 96)
TREE_LEAVES_LIGHT = (104, 182, 116)
SKIN = (255, 226, 204)
SKIN_SHADE = (240, 196, 176)
HAIR = (236, 112, 146)
HAIR_SHADE = (200, 82, 120)
HAIR_SHINE = (255, 178, 198)
EYE = (70, 110, 190)
EYE_LIGHT = (255, 255, 255)
BLUSH = (250, 170, 170)
SHIRT = (250, 250, 252)
COLLAR = (64, 88, 160)
RIBBON = (228, 60, 78)
SKIRT = (64, 88, 160)


def s(v):
    """Scale design coordinates (in 1024x576 space) to the supersampled canvas."""
    if isinstance(v, (list, tuple)):
        return [s(x) for x in v]
    return int(round(v * SS))


def outline_width(px: float = 3.0) -> int:
    return max(1, int(round(px * SS)))


def poly(d, pts, fill, ink=True, w=3.0):
    d.polygon([tuple(s(p)) for p in pts], fill=fill, outline=None)
    if ink:
        d.line([tuple(s(p)) for p in pts + [pts[0]]], fill=INK, width=outline_width(w), joint="curve")


def ellipse(d, box, fill, ink=True, w=3.0):
    d.ellipse(s(box), fill=fill, outline=INK if ink else None, width=outline_width(w) if ink else 0)


def draw_sky(d):
    band_h = 300 / len(SKY_BANDS)
    for i, c in enumerate(SKY_BANDS):
        d.rectangle(s([0, i * band_h, WIDTH, (i + 1) * band_h + 1]), fill=c)
    d.rectangle(s([0, 300, WIDTH, HEIGHT]), fill=SKY_BANDS[-1])
    # sun with a soft flat halo
    ellipse(d, [770, 40, 890, 160], (255, 246, 210), ink=False)
    ellipse(d, [790, 60, 870, 140], SUN, w=2.5)


def cloud(d, x, y, scale=1.0):
    puffs = [(0, 18, 46), (34, 0, 56), (78, 10, 48), (110, 24, 38)]
    base = [x - 10 * scale, y + 30 * scale, x + 150 * scale, y + 62 * scale]
    # shaded underside first, then puffs, then a flat base; outline everything once
    for dx, dy, r in puffs:
        ellipse(d, [x + dx * scale, y + dy * scale, x + (dx + r * 1.3) * scale, y + (dy + r) * scale], CLOUD, w=2.5)
    d.rounded_rectangle(s(base), radius=s(16 * scale), fill=CLOUD, outline=INK, width=outline_width(2.5))
    for dx, dy, r in puffs:  # cover the inner outline strokes so only the silhouette stays inked
        ellipse(d, [x + dx * scale + 4, y + dy * scale + 4, x + (dx + r * 1.3) * scale - 4,
                    y + (dy + r) * scale - 4], CLOUD, ink=False)
    d.rectangle(s([base[0] + 8, base[1] + 2, base[2] - 8, base[3] - 16 * scale]), fill=CLOUD)
    d.rectangle(s([base[0] + 10, base[3] - 15 * scale, base[2] - 10, base[3] - 5]), fill=CLOUD_SHADE)


def draw_mountains(d):
    poly(d, [(-20, 330), (150, 170), (260, 260), (380, 140), (540, 300), (680, 200), (860, 330)], MOUNTAIN_FAR)
    poly(d, [(380, 140), (412, 172), (396, 178), (380, 166), (360, 184), (350, 170)], MOUNTAIN_SNOW, w=2)
    poly(d, [(150, 170), (180, 198), (164, 204), (150, 192), (132, 208), (124, 196)], MOUNTAIN_SNOW, w=2)
    poly(d, [(560, 320), (760, 190), (900, 270), (1044, 180), (1044, 340)], MOUNTAIN_FAR)
    poly(d, [(760, 190), (786, 208), (772, 214), (760, 206), (744, 218), (736, 208)], MOUNTAIN_SNOW, w=2)


def draw_hills(d):
    d.chord(s([-300, 250, 700, 700]), 180, 360, fill=HILL_BACK, outline=INK, width=outline_width())
    d.chord(s([380, 270, 1400, 720]), 180, 360, fill=HILL_BACK, outline=INK, width=outline_width())
    d.rectangle(s([-10, 470, WIDTH + 10, HEIGHT + 10]), fill=HILL_FRONT)
    d.chord(s([-400, 380, 1500, 900]), 180, 360, fill=HILL_FRONT, outline=INK, width=outline_width())
    path = [(540, 600), (596, 520), (652, 470), (690, 446), (714, 446), (692, 474), (668, 520), (660, 600)]
    d.polygon([tuple(s(p)) for p in path], fill=PATH)
    d.line([tuple(s(p)) for p in path[:4]], fill=INK, width=outline_width(2.5), joint="curve")
    d.line([tuple(s(p)) for p in path[4:]], fill=INK, width=outline_width(2.5), joint="curve")
    for x, y in [(120, 500), (250, 540), (880, 520), (960, 470), (420, 520), (760, 470)]:
        d.line([tuple(s((x, y))), tuple(s((x + 6, y - 16))), tuple(s((x + 12, y))),
                tuple(s((x + 18, y - 12))), tuple(s((x + 24, y)))], fill=GRASS_TUFT, width=outline_width(3))


def tree(d, x, y, h=1.0):
    poly(d, [(x - 10 * h, y), (x - 7 * h, y - 70 * h), (x + 7 * h, y - 70 * h), (x + 10 * h, y)], TREE_TRUNK)
    ellipse(d, [x - 60 * h, y - 170 * h, x + 60 * h, y - 50 * h], TREE_LEAVES)
    ellipse(d, [x - 44 * h, y - 150 * h, x + 10 * h, y - 108 * h], TREE_LEAVES_LIGHT, ink=False)


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
    ellipse(d, [cx - 80, top + 246, cx - 56, top + 268], SKIN, w=2.5)
    if not wave:
        ellipse(d, [cx + 56, top + 246, cx + 80, top + 268], SKIN, w=2.5)
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


def draw_first_frame() -> Image.Image:
    img = Image.new("RGB", (WIDTH * SS, HEIGHT * SS), SKY_BANDS[0])
    d = ImageDraw.Draw(img)
    draw_sky(d)
    cloud(d, 90, 50, 1.0)
    cloud(d, 520, 90, 0.8)
    cloud(d, 900, 190, 0.6)
    draw_mountains(d)
    draw_hills(d)
    tree(d, 860, 440, 1.2)
    tree(d, 960, 410, 0.9)
    tree(d, 90, 430, 1.0)
    draw_character(d)
    return img.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)


def draw_masked_frame(first: Image.Image | None = None) -> Image.Image:
    """The first frame with alpha 0 over an ellipse around the girl (the region allowed to move) and
    255 elsewhere; the edge is anti-aliased like a soft mask-editor brush."""
    rgb = first if first is not None else draw_first_frame()
    alpha = Image.new("L", (WIDTH * SS, HEIGHT * SS), 255)
    ImageDraw.Draw(alpha).ellipse(s(MOTION_REGION), fill=0)
    out = rgb.convert("RGBA")
    out.putalpha(alpha.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS))
    return out


def write_all(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, FIRST_FRAME)
    # No metadata chunks and a fixed compression level keep the bytes reproducible.
    first = draw_first_frame()
    first.save(path, format="PNG", optimize=True)
    masked = os.path.join(out_dir, MASKED_FRAME)
    draw_masked_frame(first).save(masked, format="PNG", optimize=True)
    return [path, masked]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "example_inputs"))
    args = ap.parse_args(argv)
    for p in write_all(args.out_dir):
        print(f"{p} ({os.path.getsize(p) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
