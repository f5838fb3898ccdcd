"""The backbone-neutral guide (pipelines/guides.py) and its nodes: resolution, fitting, bad input."""
import importlib

import pytest
import torch

from animevideo.pipelines import guides
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide, fit_mask
from animevideo.pipelines.image_ops import fit_image
from animevideo.pipelines.svd.guided import latent_motion_mask

guide_nodes = importlib.import_module("animevideo.nodes.guides")
nodes_pkg = importlib.import_module("animevideo.nodes")


def img(value=0.5, h=8, w=8):
    return torch.full((h, w, 3), float(value))


# ---------------------------------------------------------------------------------------------
# Keyframe resolution
# ---------------------------------------------------------------------------------------------

def test_negative_indices_count_from_the_end_and_keyframes_come_sorted():
    g = Guide().with_keyframe(img(0.1), -1).with_keyframe(img(0.2), 0).with_keyframe(img(0.3), 5) \
        .with_keyframe(img(0.4), -10)
    got = [(r.index, r.requested) for r in g.resolve_keyframes(10)]
    assert got == [(0, -10), (5, 5), (9, -1)]  # -10 and 0 name frame 0: the later keyframe (-10) wins
    assert float(g.resolve_keyframes(10)[0].keyframe.image[0, 0, 0]) == pytest.approx(0.4)
    assert [r.index for r in g.resolve_keyframes(25)] == [0, 5, 15, 24]


@pytest.mark.parametrize("index", [10, 11, -11, 4096])
def test_keyframe_outside_the_clip_is_a_clear_error(index):
    g = Guide().with_keyframe(img(), index)
    with pytest.raises(AnimeVideoInputError) as e:
        g.resolve_keyframes(10)
    msg = str(e.value)
    assert "frame_index" in msg and str(index) in msg and "0..9" in msg and "-10..-1" in msg


def test_nearest_keyframe_prefers_the_earlier_on_a_tie():
    g = Guide().with_keyframe(img(), 0).with_keyframe(img(), 4)
    assert [g.nearest_keyframe(f, 9).index for f in range(9)] == [0, 0, 0, 4, 4, 4, 4, 4, 4]
    assert [g.nearest_keyframe(f, 9).index for f in (1, 2, 3)] == [0, 0, 4]
    assert Guide().nearest_keyframe(3, 9) is None


@pytest.mark.parametrize("make, needle", [
    (lambda: Guide().with_keyframe(torch.rand(2, 8, 8, 3), 0), "batch of 2"),
    (lambda: Guide().with_keyframe(torch.rand(8, 8), 0), "IMAGE"),
    (lambda: Guide().with_keyframe(img(), 0, strength=1.5), "strength"),
    (lambda: Guide().with_motion_mask(torch.zeros(1, 8, 8)), "empty"),
    (lambda: Guide().with_motion_mask(torch.zeros(2, 1, 8, 8)), "mask"),
    (lambda: Guide().with_motion_mask("mask"), "MASK"),
])
def test_bad_guide_input_names_the_input(make, needle):
    with pytest.raises(AnimeVideoInputError, match=needle):
        make()


def test_motion_mask_without_a_keyframe_cannot_give_a_known_video():
    g = Guide().with_motion_mask(torch.ones(1, 8, 8))
    with pytest.raises(AnimeVideoInputError, match="needs at least one keyframe"):
        g.known_video(3, 8, 8)


# ---------------------------------------------------------------------------------------------
# Sizes: masks and keyframes of another size than the clip are fitted (documented behaviour)
# ---------------------------------------------------------------------------------------------

def test_mask_of_another_size_is_resized_to_the_frames():
    m = torch.zeros(1, 16, 16)
    m[:, :, :8] = 1  # left half may move
    g = Guide().with_keyframe(img(h=32, w=32), 0).with_motion_mask(m)
    video = g.mask_video(5, 32, 32)
    assert video.shape == (5, 32, 32)
    assert torch.all(video[:, :, :14] == 1) and torch.all(video[:, :, 18:] == 0)
    _, known = g.known_video(5, 32, 32)
    assert known.shape == (5, 32, 32)
    assert torch.all(known[0] == 1)  # the keyframe's frame is known everywhere
    assert torch.all(known[1:, :, 18:] == 1) and torch.all(known[1:, :, :14] == 0)


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_masks_are_fitted_with_the_same_geometry_as_the_images(fit):
    """A mask painted on the input picture lines up with the picture after the sampler's fit."""
    h, w = 40, 90
    mask = torch.zeros(1, h, w)
    mask[:, 10:30, 20:50] = 1
    picture = mask[0, :, :, None].expand(h, w, 3)  # the same shape drawn as an image
    fitted_image = fit_image(picture.permute(2, 0, 1)[None], 64, 48, fit)[0, 0]
    fitted_mask = fit_mask(mask, 48, 64, fit)[0]
    torch.testing.assert_close(fitted_mask, fitted_image.clamp(0, 1), rtol=0, atol=1e-6)
    assert guides.fit_frame(picture, 48, 64, fit).shape == (48, 64, 3)
    if fit == "pad":  # the letterbox is static
        assert float(fitted_mask[:5].max()) == 0.0


def test_mask_video_length_is_resampled_by_nearest_frame():
    m = torch.stack([torch.full((4, 4), v) for v in (0.2, 0.4, 0.6, 1.0)])
    g = Guide().with_motion_mask(m)
    got = g.mask_video(7, 4, 4)[:, 0, 0]
    torch.testing.assert_close(got, torch.tensor([0.2, 0.4, 0.4, 0.6, 0.6, 1.0, 1.0]))


def test_known_video_takes_the_still_part_from_the_nearest_keyframe():
    a, b = img(0.2, 4, 4), img(0.8, 4, 4)
    m = torch.zeros(1, 4, 4)
    m[:, :, :2] = 1
    g = Guide().with_keyframe(a, 0).with_keyframe(b, -1, strength=0.5).with_motion_mask(m)
    video, known = g.known_video(5, 4, 4)
    assert torch.all(video[1, :, 2:] == 0.2) and torch.all(video[4, :, 2:] == 0.8) and torch.all(video[3, :, 2:] == 0.8)
    assert torch.all(known[1, :, 2:] == 1.0) and torch.all(known[3, :, 2:] == 0.5) and torch.all(known[3, :, :2] == 0)
    assert torch.all(known[4] == 0.5)


def test_later_mask_replaces_an_earlier_one_with_a_note():
    g = Guide().with_motion_mask(torch.ones(1, 4, 4)).with_motion_mask(torch.ones(1, 2, 2) * 0.5)
    assert g.motion_mask.shape == (1, 2, 2) and "replaced" in g.describe()


# ---------------------------------------------------------------------------------------------
# Latent motion mask (SVD adapter): hand-computed expectations
# ---------------------------------------------------------------------------------------------

def test_latent_motion_mask_cells_threshold_and_dilation():
    m = torch.zeros(1, 64, 64)
    m[0, 3, 5] = 1.0  # one pixel in latent cell (0, 0)
    m[0, 40:48, 56:64] = 0.4  # a whole cell below the threshold: stays still
    got = latent_motion_mask(m, 8)
    expected = torch.zeros(1, 8, 8)
    expected[0, 0:2, 0:2] = 1  # cell (0,0) dilated by one latent pixel
    assert torch.equal(got, expected)
    assert latent_motion_mask(m, 8, dilate=0)[0].nonzero().tolist() == [[0, 0]]
    m2 = torch.zeros(1, 64, 64)
    m2[0, 20:30, 33:40] = 0.7  # rows 20..29 -> cells 2..3, cols 33..39 -> cell 4
    e2 = torch.zeros(8, 8)
    e2[1:5, 3:6] = 1
    assert torch.equal(latent_motion_mask(m2, 8)[0], e2)


# ---------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------

def test_guide_nodes_are_registered_with_tooltips():
    for node_id in ("AnimeVideoKeyframe", "AnimeVideoMotionMask"):
        cls = nodes_pkg.NODE_CLASS_MAPPINGS[node_id]
        assert cls.RETURN_TYPES == ("ANIMEVIDEO_GUIDE",) and cls.CATEGORY == "AnimeVideo/Guides"
        for section in ("required", "optional"):
            for name, (_, opts) in cls.INPUT_TYPES().get(section, {}).items():
                assert opts.get("tooltip"), f"{node_id}.{name}"
    spec = nodes_pkg.NODE_CLASS_MAPPINGS["AnimeVideoKeyframe"].INPUT_TYPES()["required"]
    assert spec["frame_index"][1]["default"] == 0 and spec["frame_index"][1]["min"] < 0
    assert spec["strength"][1]["default"] == 1.0


def test_keyframe_nodes_chain_and_accept_rgba_and_grey():
    kf = guide_nodes.AnimeVideoKeyframe()
    (g,) = kf.add(torch.rand(1, 16, 24, 4), 0, 1.0)
    (g,) = kf.add(torch.rand(1, 16, 24, 1), -1, 0.75, guide=g)
    assert [k.frame_index for k in g.keyframes] == [0, -1]
    assert g.keyframes[0].image.shape == (16, 24, 3) and g.keyframes[1].strength == 0.75
    with pytest.raises(AnimeVideoInputError, match="batch of 3"):
        kf.add(torch.rand(3, 16, 24, 3), 0, 1.0)
    with pytest.raises(AnimeVideoInputError, match="guide"):
        kf.add(torch.rand(1, 16, 24, 3), 0, 1.0, guide="not a guide")


def test_motion_mask_node_inverts_and_rejects_an_empty_mask():
    mm = guide_nodes.AnimeVideoMotionMask()
    m = torch.zeros(1, 8, 8)
    m[:, :, :4] = 1
    (g,) = mm.add(m)
    (gi,) = mm.add(m, invert=True)
    assert torch.equal(g.motion_mask, m) and torch.equal(gi.motion_mask, 1 - m)
    with pytest.raises(AnimeVideoInputError, match="empty"):
        mm.add(torch.zeros(1, 8, 8))
    with pytest.raises(AnimeVideoInputError, match="empty"):
        mm.add(torch.ones(1, 8, 8), invert=True)
    (g2,) = mm.add(m, guide=guide_nodes.AnimeVideoKeyframe().add(torch.rand(1, 8, 8, 3), 0, 1.0)[0])
    assert len(g2.keyframes) == 1 and g2.motion_mask is not None


def test_guide_storyboard_node_draws_the_chain_and_shows_its_info():
    from animevideo.pipelines import storyboard as sb

    kf = guide_nodes.AnimeVideoKeyframe()
    (g,) = kf.add(torch.rand(1, 18, 32, 3), 0, 1.0)
    (g,) = kf.add(torch.rand(1, 18, 32, 3), -1, 0.75, guide=g)
    mask = torch.zeros(1, 18, 32)
    mask[:, 4:12, 8:20] = 1
    (g,) = guide_nodes.AnimeVideoMotionMask().add(mask, guide=g)
    cls = nodes_pkg.NODE_CLASS_MAPPINGS["AnimeVideoGuidePreview"]
    assert cls.RETURN_TYPES == ("IMAGE", "STRING") and cls.CATEGORY == "AnimeVideo/Guides"
    answer = cls().preview(g, 6, 64, 36, "crop", thumb_height=36, columns=3)
    image, info = answer["result"]
    assert answer["ui"] == {"text": [info]}
    assert "Frame 5 (frame_index -1): keyframe, strength 0.75." in info and "Frame 0: keyframe" in info
    layout = sb.storyboard_layout(6, 64, 36, 36, 3)
    assert image.shape == (1, *layout.size, 3) and image.dtype == torch.float32
    pixels = (image[0] * 255).round().to(torch.uint8)
    x0, y0, x1, y1 = layout.thumb_box(5)
    assert tuple(pixels[y0 - 1, (x0 + x1) // 2].tolist()) == sb.KEYFRAME  # frame 5 is outlined
    x0, y0, x1, y1 = layout.thumb_box(2)
    assert tuple(pixels[y0 - 1, (x0 + x1) // 2].tolist()) == sb.BACKGROUND  # frame 2 is not

    # a connected clip sets the frame count and the size
    clip = torch.rand(4, 20, 40, 3)
    image, info = cls().preview(g, 99, 8, 8, "crop", frames=clip, thumb_height=20)["result"]
    assert "clip of 4 frames, 40x20" in info
    assert image.shape[1:3] == sb.storyboard_layout(4, 40, 20, 20, 8).size


@pytest.mark.parametrize("kw,name", [(dict(num_frames=3), "frame_index"), (dict(fit="zoom"), "fit"),
                                     (dict(num_frames=4096, columns=1, thumb_height=512), "num_frames"),
                                     (dict(guide="not a guide"), "guide"),
                                     (dict(frames=torch.zeros(0, 8, 8, 3)), "frames")])
def test_guide_storyboard_node_names_bad_inputs(kw, name):
    (g,) = guide_nodes.AnimeVideoKeyframe().add(torch.rand(1, 8, 8, 3), 5, 1.0)
    args = dict(guide=g, num_frames=8, width=64, height=36, fit="crop")
    args.update(kw)
    with pytest.raises(AnimeVideoInputError, match=name):
        guide_nodes.AnimeVideoGuidePreview().preview(**args)
