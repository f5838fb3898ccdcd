"""Pictures that show what a guide fixes and what the interpolation found, for IMAGE outputs on the canvas.

- :func:`guide_storyboard`: one thumbnail per frame of the clip a guide will meet. Keyframes are outlined in
  :data:`KEYFRAME` and labelled with their strength; the region a motion mask lets move is tinted
  :data:`MOVES`; frames the guide leaves free are :data:`FREE` grey (or show the generated frame when
  the clip is given).
- :func:`interpolation_timeline`: the source frames grouped into drawings (alternating shades), scene cuts
  as :data:`CUT` bars, and the output frames at their source times, :data:`NEW` when interpolated and
  :data:`COPIED` when a source frame is repeated.

Both return ``uint8`` arrays [H, W, 3]; layouts are computed by small classes whose boxes the tests read
to check the drawn pixels. Shapes and colours are drawn with numpy, labels with Pillow's built-in font
(Pillow is already a requirement; no font files are read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .guides import Guide, fit_frame
from .interpolate.timing import cadence_name

BACKGROUND = (24, 24, 28)
TEXT = (220, 220, 226)
DIM_TEXT = (150, 150, 160)
KEYFRAME = (255, 170, 0)
MOVES = (0, 200, 255)
FREE = (64, 64, 72)
DRAWING_SHADES = ((70, 110, 170), (110, 150, 210))
NEW = (80, 200, 120)
COPIED = (112, 112, 122)
CUT = (235, 45, 60)

STORYBOARD_LEGEND = ((KEYFRAME, "keyframe (strength)"), (MOVES, "may move"), (FREE, "free"))
TIMELINE_LEGEND = ((DRAWING_SHADES[0], "drawing"), (DRAWING_SHADES[1], "next drawing"), (NEW, "new frame"),
                   (COPIED, "copied frame"), (CUT, "scene cut"))
MIN_WIDTH = 480  # room for the header and the legend

MOVE_TINT = 0.5  # share of MOVES mixed into the moving region
BORDER = 3
GAP = 8
LABEL_H = 14
LINE_H = 14


# ---------------------------------------------------------------------------------------------
# Drawing primitives
# ---------------------------------------------------------------------------------------------

def fill(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour) -> None:
    """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
    h, w = canvas.shape[:2]
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x0 < x1 and y0 < y1:
        canvas[y0:y1, x0:x1] = colour


def frame_rect(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour, width: int) -> None:
    """A ``width``-px outline just outside the box [x0, x1) x [y0, y1)."""
    fill(canvas, x0 - width, y0 - width, x1 + width, y0, colour)
    fill(canvas, x0 - width, y1, x1 + width, y1 + width, colour)
    fill(canvas, x0 - width, y0, x0, y1, colour)
    fill(canvas, x1, y0, x1 + width, y1, colour)


def draw_texts(canvas: np.ndarray, texts: list[tuple[int, int, str, tuple]]) -> np.ndarray:
    """Draw (x, y, string, colour) labels with Pillow's built-in font, each's top-left corner at (x, y);
    all in one pass, after the shapes (labels are placed where no shape lies)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for x, y, s, colour in texts:
        draw.text((x, y), s, fill=tuple(colour), font=font)
    return np.asarray(img).copy()


def legend_width(entries) -> int:
    return sum(14 + 7 * len(name) + 12 for _, name in entries)


def legend(canvas: np.ndarray, texts: list, x: int, y: int, entries) -> None:
    """A row of colour swatches with their names, starting at (x, y)."""
    for colour, name in entries:
        fill(canvas, x, y + 2, x + 10, y + 12, colour)
        texts.append((x + 14, y, name, DIM_TEXT))
        x += 14 + 7 * len(name) + 12


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[..., H, W, 3] float 0..1 -> uint8 numpy."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE [N, H, W, 3] -> [N, height, width, 3] (area filter, the frames' aspect assumed kept)."""
    x = frames[..., :3].permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="area")
    return x.permute(0, 2, 3, 1).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Guide storyboard
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoryboardLayout:
    num_frames: int
    thumb_w: int
    thumb_h: int
    columns: int
    top: int = 2 * LINE_H + GAP  # two header lines
    pad: int = GAP

    @property
    def rows(self) -> int:
        return math.ceil(self.num_frames / self.columns)

    @property
    def cell_w(self) -> int:
        return self.thumb_w + 2 * BORDER + GAP

    @property
    def cell_h(self) -> int:
        return self.thumb_h + 2 * BORDER + LABEL_H + GAP

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole picture."""
        return (self.top + self.rows * self.cell_h + self.pad,
                max(MIN_WIDTH, 2 * self.pad + self.columns * self.cell_w - GAP))

    def thumb_box(self, i: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of frame i's thumbnail (the keyframe outline lies just outside it)."""
        r, c = divmod(i, self.columns)
        x0 = self.pad + c * self.cell_w + BORDER
        y0 = self.top + r * self.cell_h + BORDER
        return x0, y0, x0 + self.thumb_w, y0 + self.thumb_h


def storyboard_layout(num_frames: int, width: int, height: int, thumb_height: int, columns: int) -> StoryboardLayout:
    thumb_w = max(8, round(thumb_height * width / height))
    return StoryboardLayout(num_frames, thumb_w, int(thumb_height), max(1, min(int(columns), num_frames)))


def guide_storyboard(guide: Guide, num_frames: int, width: int, height: int, fit: str | None = "crop",
                     frames: torch.Tensor | None = None, thumb_height: int = 72,
                     columns: int = 8) -> tuple[np.ndarray, StoryboardLayout]:
    """The storyboard of ``guide`` on a clip of ``num_frames`` frames of ``width`` x ``height``.

    Thumbnails show, per frame, what the guide fixes: keyframe pictures (blended over grey by their
    strength), the still part a motion mask takes from the nearest keyframe, and the region that may move
    tinted (over the nearest keyframe's picture of it).
    With ``frames`` (an IMAGE clip of ``num_frames`` frames, e.g. the sampler's output) the thumbnails
    show those frames instead, with the same outlines and tint. Keyframes and masks are fitted with
    ``fit`` as the samplers fit them, so the tint lands where the sampler lets the picture move.
    """
    layout = storyboard_layout(num_frames, width, height, thumb_height, columns)
    tw, th = layout.thumb_w, layout.thumb_h
    resolved = guide.resolve_keyframes(num_frames)  # readable error for indices outside the clip
    strength = torch.zeros(num_frames)
    for r in resolved:
        strength[r.index] = r.keyframe.strength
    grey = torch.tensor(FREE, dtype=torch.float32) / 255
    mask = guide.mask_video(num_frames, th, tw, fit)
    # the share of each pixel that may move: the mask, less where a keyframe holds its frame
    moving = None if mask is None else (mask * (1 - strength[:, None, None]))[..., None]
    if frames is not None:
        base = resize_frames(frames, th, tw)
    elif resolved:
        video, known = guide.known_video(num_frames, th, tw, fit)
        base = video * known[..., None] + grey * (1 - known[..., None])
        if moving is not None:  # under the tint, the drawing that may move: the nearest keyframe's
            fitted = {r.index: fit_frame(r.keyframe.image, th, tw, fit) for r in resolved}
            under = torch.stack([fitted[guide.nearest_keyframe(f, num_frames).index] for f in range(num_frames)])
            base = base * (1 - moving) + under * moving
    else:
        base = grey.expand(num_frames, th, tw, 3).clone()
    if moving is not None:
        tint = moving * MOVE_TINT
        base = base * (1 - tint) + torch.tensor(MOVES, dtype=torch.float32) / 255 * tint
    thumbs = to_uint8(base)

    canvas = np.empty((*layout.size, 3), np.uint8)
    canvas[:] = BACKGROUND
    texts = []
    keyframes = {r.index for r in resolved}
    for i in range(num_frames):
        x0, y0, x1, y1 = layout.thumb_box(i)
        canvas[y0:y1, x0:x1] = thumbs[i]
        label, colour = f"{i}", DIM_TEXT
        if i in keyframes:
            frame_rect(canvas, x0, y0, x1, y1, KEYFRAME, BORDER)
            label, colour = f"{i} key {float(strength[i]):g}", KEYFRAME
        texts.append((x0, y1 + BORDER + 1, label, colour))
    moving = f", {float(guide.motion_mask.mean()) * 100:.0f}% may move" if guide.motion_mask is not None else ""
    texts.append((layout.pad, 2, f"Guide on {num_frames} frames {width}x{height} (fit {fit}): "
                                 f"{len(keyframes)} keyframe(s){moving}", TEXT))
    legend(canvas, texts, layout.pad, 2 + LINE_H, STORYBOARD_LEGEND)
    return draw_texts(canvas, texts), layout


# ---------------------------------------------------------------------------------------------
# Interpolation timeline
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimelineLayout:
    num_source: int
    num_output: int
    step: float  # source frames per output frame
    cell_w: float  # px per source frame
    thumb_h: int
    left: int = 56  # room for the row names
    top: int = 2 * LINE_H + GAP
    row_h: int = 22

    @property
    def thumbs_y(self) -> tuple[int, int]:
        return self.top, self.top + self.thumb_h

    @property
    def source_y(self) -> tuple[int, int]:
        y = self.thumbs_y[1] + (4 if self.thumb_h else 0)
        return y, y + self.row_h

    @property
    def output_y(self) -> tuple[int, int]:
        y = self.source_y[1] + LABEL_H + 6
        return y, y + self.row_h

    @property
    def size(self) -> tuple[int, int]:
        return (self.output_y[1] + LINE_H + GAP + 4,
                max(MIN_WIDTH, legend_width(TIMELINE_LEGEND) + 8,
                    self.left + math.ceil(self.num_source * self.cell_w) + GAP))

    def source_x(self, i: float) -> int:
        """x of the left edge of source frame i (fractional i: a time inside the clip)."""
        return self.left + round(i * self.cell_w)

    def source_cell(self, i: int) -> tuple[int, int]:
        return self.source_x(i), max(self.source_x(i) + 1, self.source_x(i + 1))

    def output_cell(self, j: int) -> tuple[int, int]:
        x0 = self.source_x(j * self.step)
        return x0, max(x0 + 1, self.source_x((j + 1) * self.step))

    def cut_bar(self, frame: int) -> tuple[int, int]:
        """x range of the cut marker drawn before source frame ``frame``."""
        x = self.source_x(frame)
        return x - 1, x + 2


def timeline_layout(num_source: int, num_output: int, step: float, max_width: int = 1536,
                    thumb_h: int = 40) -> TimelineLayout:
    cell_w = max(1.0, min(48.0, (max_width - 64) / max(1, num_source)))
    return TimelineLayout(num_source, num_output, float(step), cell_w, thumb_h)


def interpolation_timeline(analysis, plan, source_fps, target_fps, frames: torch.Tensor | None = None,
                           max_width: int = 1536) -> tuple[np.ndarray, TimelineLayout]:
    """Draw what ``timing.analyze_clip`` found and what ``timing.plan_retiming`` made of it.

    Source row: one cell per source frame, shaded by drawing (the shade alternates at each new drawing,
    so frames held on twos/threes form one block); scene cuts are red bars before the cut frame. Output
    row: one cell per output frame at its source time, green when interpolated, grey when copied. With
    ``frames`` (the source clip) each drawing's first frame is shown above its block.
    """
    n = analysis.num_frames
    step = float(source_fps) / float(target_fps)
    thumb_h = 40 if frames is not None else 0
    layout = timeline_layout(n, len(plan), step, max_width, thumb_h)
    canvas = np.empty((*layout.size, 3), np.uint8)
    canvas[:] = BACKGROUND
    texts = []
    starts = analysis.starts
    ends = starts[1:] + [n]
    sy0, sy1 = layout.source_y
    for k, (s, e) in enumerate(zip(starts, ends)):
        shade = DRAWING_SHADES[k % 2]
        for i in range(s, e):
            x0, x1 = layout.source_cell(i)
            fill(canvas, x0, sy0, x1, sy1, shade)
            if i > s and x1 - x0 >= 4:  # a thin tick between the held frames of one drawing
                fill(canvas, x0, sy1 - 5, x0 + 1, sy1, BACKGROUND)
        x0, x1 = layout.source_x(s), layout.source_x(e)
        if frames is not None and x1 - x0 >= 6:  # the drawing above its block, where there is room
            ty0, ty1 = layout.thumbs_y
            h, w = frames.shape[1:3]
            tw = max(1, min(x1 - x0 - 2, round(thumb_h * w / h)))
            canvas[ty0:ty1, x0 + 1:x0 + 1 + tw] = to_uint8(resize_frames(frames[s:s + 1].cpu(), thumb_h, tw))[0]
    oy0, oy1 = layout.output_y
    for j, f in enumerate(plan):
        x0, x1 = layout.output_cell(j)
        fill(canvas, x0, oy0, x1, oy1, COPIED if f.is_copy else NEW)
        if x1 - x0 >= 4:
            fill(canvas, x1 - 1, oy0, x1, oy1, BACKGROUND)  # a 1-px gap between output frames
    cut_xs = []
    for k in analysis.cuts:
        x0, x1 = layout.cut_bar(starts[k])
        fill(canvas, x0, layout.top, x1, oy1, CUT)
        texts.append((x1 + 1, sy1 + 1, "cut", CUT))
        cut_xs.append(x1)
    every = max(1, math.ceil(40 / layout.cell_w))  # frame numbers about every 40 px, not over a "cut"
    for i in range(0, n, every):
        x = layout.source_x(i)
        if not any(c - 2 <= x <= c + 24 for c in cut_xs):
            texts.append((x, sy1 + 1, str(i), DIM_TEXT))
    texts += [(4, sy0 + 4, "source", DIM_TEXT), (4, oy0 + 4, "output", DIM_TEXT)]
    new = sum(1 for f in plan if not f.is_copy)
    cadence = cadence_name(analysis.cadence) if analysis.dedup else "dedup off"
    texts.append((4, 2, f"{n} frames at {float(source_fps):g} fps: {len(starts)} drawings ({cadence}), "
                        f"{len(analysis.cuts)} scene cut(s)", TEXT))
    texts.append((4, 2 + LINE_H, f"{len(plan)} frames at {float(target_fps):g} fps: {new} new (interpolated), "
                                 f"{len(plan) - new} copied", TEXT))
    legend(canvas, texts, 4, oy1 + 6, TIMELINE_LEGEND)
    return draw_texts(canvas, texts), layout

