"""The pictures the guide storyboard and the interpolation timeline draw, checked pixel by pixel at the
places their layouts give (the keyframe outline around the keyframe's thumbnail, the motion tint inside
the masked region, the cut bar before the cut frame, new vs copied output frames)."""
import numpy as np
import pytest
import torch

from animevideo.pipelines import storyboard as sb
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide
from animevideo.pipelines.interpolate import timing


def solid(colour, h=36, w=64):
    return torch.tensor(colour, dtype=torch.float32).div(255).expand(h, w, 3).clone()


def border_pixels(canvas, box, width=sb.BORDER):
    """Every pixel of the ``width``-px ring just outside ``box``."""
    x0, y0, x1, y1 = box
    ring = np.ones((y1 - y0 + 2 * width, x1 - x0 + 2 * width), bool)
    ring[width:-width, width:-width] = False
    return canvas[y0 - width:y1 + width, x0 - width:x1 + width][ring]


def inside(canvas, box, fx, fy):
    """The pixel at fraction (fx, fy) of a thumbnail box."""
    x0, y0, x1, y1 = box
    return canvas[y0 + int(fy * (y1 - y0)), x0 + int(fx * (x1 - x0))]


# ---------------------------------------------------------------------------------------------
# Guide storyboard
# ---------------------------------------------------------------------------------------------

def test_keyframes_are_outlined_where_they_land_and_nowhere_else():
    red, blue = (200, 30, 30), (30, 30, 200)
    guide = Guide().with_keyframe(solid(red), 0).with_keyframe(solid(blue), -1, strength=0.6)
    canvas, layout = sb.guide_storyboard(guide, 10, 64, 36, fit="crop", thumb_height=36, columns=4)
    assert canvas.dtype == np.uint8 and canvas.shape == (*layout.size, 3)
    for i in range(10):
        ring = border_pixels(canvas, layout.thumb_box(i))
        is_key = (ring == sb.KEYFRAME).all(axis=1)
        if i in (0, 9):  # -1 resolves to the last frame
            assert is_key.all(), i
        else:
            assert not is_key.any(), i
    # the thumbnails show the keyframe pictures, blended over grey by their strength
    assert tuple(inside(canvas, layout.thumb_box(0), 0.5, 0.5)) == red
    expected = np.round(0.6 * np.array(blue) + 0.4 * np.array(sb.FREE))
    assert np.abs(inside(canvas, layout.thumb_box(9), 0.5, 0.5).astype(int) - expected).max() <= 1
    assert tuple(inside(canvas, layout.thumb_box(4), 0.5, 0.5)) == sb.FREE  # nothing fixes frame 4
    # frame 5 sits in row 1, column 1 of a 4-column grid
    assert layout.thumb_box(5)[1] > layout.thumb_box(3)[1] and layout.thumb_box(5)[0] == layout.thumb_box(1)[0]


def test_motion_mask_region_is_tinted_between_keyframes_only_inside_the_mask():
    grey = (128, 128, 128)
    mask = torch.zeros(1, 36, 64)
    mask[:, :, 32:] = 1  # the right half may move
    guide = Guide().with_keyframe(solid(grey), 0).with_motion_mask(mask)
    canvas, layout = sb.guide_storyboard(guide, 4, 64, 36, fit="crop", thumb_height=36, columns=4)
    # the moving region: the nearest keyframe's picture of it, tinted
    tinted = np.round((1 - sb.MOVE_TINT) * np.array(grey) + sb.MOVE_TINT * np.array(sb.MOVES))
    for i in (1, 2, 3):
        left, right = inside(canvas, layout.thumb_box(i), 0.2, 0.5), inside(canvas, layout.thumb_box(i), 0.8, 0.5)
        assert tuple(left) == grey, i  # still: the keyframe's picture
        assert np.abs(right.astype(int) - tinted).max() <= 1, i
    # the keyframe holds its whole frame: no tint there
    assert tuple(inside(canvas, layout.thumb_box(0), 0.8, 0.5)) == grey


def test_moving_region_shows_the_nearest_keyframe_under_the_tint():
    red, blue = (200, 40, 40), (40, 40, 200)
    mask = torch.zeros(1, 36, 64)
    mask[:, :, 32:] = 1
    guide = Guide().with_keyframe(solid(red), 0).with_keyframe(solid(blue), 9).with_motion_mask(mask)
    canvas, layout = sb.guide_storyboard(guide, 10, 64, 36, fit="crop", thumb_height=36)
    for frame, colour in ((2, red), (4, red), (5, blue), (7, blue)):  # 4.5 is the middle: ties go earlier
        want = np.round((1 - sb.MOVE_TINT) * np.array(colour) + sb.MOVE_TINT * np.array(sb.MOVES))
        got = inside(canvas, layout.thumb_box(frame), 0.8, 0.5).astype(int)
        assert np.abs(got - want).max() <= 1, (frame, got, want)
        assert tuple(inside(canvas, layout.thumb_box(frame), 0.2, 0.5)) == colour  # still part, untinted


def test_mask_follows_the_fit_mode_of_the_sampler():
    """A mask painted on a 2:1 picture, cropped to a 1:1 clip: the crop window decides what is tinted."""
    mask = torch.zeros(1, 32, 64)
    mask[:, :, :16] = 1  # the left quarter: cut away by a centre crop to 32x32
    guide = Guide().with_keyframe(solid((128, 128, 128), 32, 64), 0).with_motion_mask(mask)
    crop, lay = sb.guide_storyboard(guide, 2, 32, 32, fit="crop", thumb_height=32)
    stretch, lay2 = sb.guide_storyboard(guide, 2, 32, 32, fit="stretch", thumb_height=32)
    assert tuple(inside(crop, lay.thumb_box(1), 0.1, 0.5)) == (128, 128, 128)
    assert tuple(inside(stretch, lay2.thumb_box(1), 0.1, 0.5)) != (128, 128, 128)


def test_given_frames_are_shown_under_the_outlines():
    frames = torch.stack([solid((10 * i, 100, 50)) for i in range(6)])
    guide = Guide().with_keyframe(solid((255, 255, 255)), 3)
    canvas, layout = sb.guide_storyboard(guide, 6, 64, 36, frames=frames, thumb_height=36)
    for i in range(6):
        assert tuple(inside(canvas, layout.thumb_box(i), 0.5, 0.5)) == (10 * i, 100, 50)
    assert (border_pixels(canvas, layout.thumb_box(3)) == sb.KEYFRAME).all()


def test_keyframe_outside_the_clip_is_named():
    guide = Guide().with_keyframe(solid((1, 2, 3)), 20)
    with pytest.raises(AnimeVideoInputError, match="frame_index"):
        sb.guide_storyboard(guide, 14, 64, 36)


# ---------------------------------------------------------------------------------------------
# Interpolation timeline
# ---------------------------------------------------------------------------------------------

def on_twos_with_a_cut():
    """12 frames: drawings on twos (0,2,4,6 in shot A; 8,10 in shot B), a cut before frame 8."""
    torch.manual_seed(0)
    a, b = torch.rand(4, 24, 32, 3) * 0.5 + 0.5, torch.rand(2, 24, 32, 3) * 0.1
    return torch.cat([a, b]).repeat_interleave(2, dim=0)


def test_timeline_groups_drawings_marks_cuts_and_colours_new_and_copied_frames():
    frames = on_twos_with_a_cut()
    analysis = timing.analyze_clip(frames, True, 0.02, 0.4)
    assert analysis.starts == [0, 2, 4, 6, 8, 10] and analysis.cuts == [4]
    plan = timing.plan_retiming(analysis, 12, 24)
    canvas, layout = sb.interpolation_timeline(analysis, plan, 12, 24, frames)
    assert canvas.shape == (*layout.size, 3)

    sy = layout.source_y[0] + 3  # above the held-frame ticks
    for i in range(12):
        x0, x1 = layout.source_cell(i)
        if layout.cut_bar(8)[0] <= (x0 + x1) // 2 < layout.cut_bar(8)[1]:
            continue
        assert tuple(canvas[sy, (x0 + x1) // 2]) == sb.DRAWING_SHADES[(i // 2) % 2], i  # held frames share a shade

    cut0, cut1 = layout.cut_bar(8)
    oy = (layout.output_y[0] + layout.output_y[1]) // 2
    assert (canvas[sy, cut0:cut1] == sb.CUT).all() and (canvas[oy, cut0:cut1] == sb.CUT).all()
    for other in (2, 4, 6, 10):  # drawing changes without a cut have no bar
        x = layout.source_x(other)
        assert not (canvas[sy, x - 1:x + 2] == sb.CUT).all(axis=1).any(), other

    new = copied = 0
    for j, f in enumerate(plan):
        x0, x1 = layout.output_cell(j)
        if cut0 <= x0 < cut1:
            continue
        colour = tuple(canvas[oy, x0])
        assert colour == (sb.COPIED if f.is_copy else sb.NEW), (j, f)
        new, copied = new + (not f.is_copy), copied + f.is_copy
    assert new and copied
    # the frames before the cut are held, not blended into the next shot
    assert all(plan[j].is_copy for j in range(12, 16))

    # each drawing's first frame is shown above its block
    ty = (layout.thumbs_y[0] + layout.thumbs_y[1]) // 2
    x = layout.source_x(4) + 3
    expected = sb.to_uint8(sb.resize_frames(frames[4:5], layout.thumb_h, 53))[0]
    assert np.abs(canvas[ty, x].astype(int) - expected[ty - layout.thumbs_y[0], 2].astype(int)).max() <= 40


def test_timeline_without_dedup_alternates_every_frame_and_long_clips_fit():
    frames = torch.rand(300, 8, 8, 3)
    analysis = timing.analyze_clip(frames, False, 0.02, 1.0)
    plan = timing.plan_retiming(analysis, 24, 60)
    canvas, layout = sb.interpolation_timeline(analysis, plan, 24, 60)
    assert canvas.shape[1] <= 1536 + 64 and layout.thumb_h == 0
    sy = layout.source_y[0] + 3
    shades = {tuple(canvas[sy, layout.source_cell(i)[0]]) for i in range(300)}
    assert shades == set(sb.DRAWING_SHADES)
