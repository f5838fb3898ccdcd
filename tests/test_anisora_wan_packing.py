"""AniSora's Wan conditioning (Φ4 mask packing + zero-filled guide video) against hand-computed layouts."""
import pytest
import torch

from animevideo.pipelines.anisora import packing
from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.guides import Guide

H, W = 32, 48  # latent 4 x 6
h, w = H // 8, W // 8


def image(seed=0):
    return torch.rand(H, W, 3, generator=torch.Generator().manual_seed(seed))


def expected_mask(num_frames, known_frames, value=1.0):
    """Hand layout: slot 0 = frame 0 in all 4 channels; frame i >= 1 -> slot (i-1)//4+1, channel (i-1)%4."""
    t = (num_frames - 1) // 4 + 1
    m = torch.zeros(4, t, h, w)
    for i in known_frames:
        if i == 0:
            m[:, 0] = value
        else:
            m[(i - 1) % 4, (i - 1) // 4 + 1] = value
    return m


@pytest.mark.parametrize("num_frames,indices,frames", [
    (9, [0], [0]),
    (9, [0, -1], [0, 8]),
    (13, [5], [5]),
    (17, [0, 4, 8, -1], [0, 4, 8, 16]),
    (9, [-5], [4]),
    (5, [1, 2, 3, 4], [1, 2, 3, 4]),
])
def test_keyframes_land_in_hand_computed_slots(num_frames, indices, frames):
    g = Guide()
    for k, i in enumerate(indices):
        g = g.with_keyframe(image(k), i)
    c = packing.build_wan_condition(g, num_frames, H, W)
    assert c.mask.shape == (1, 4, (num_frames - 1) // 4 + 1, h, w)
    assert torch.equal(c.mask[0], expected_mask(num_frames, frames))
    assert c.video.shape == (1, 3, num_frames, H, W)
    by_frame = {f: image(k) for k, f in enumerate(frames)}
    for f in range(num_frames):
        want = by_frame[f].permute(2, 0, 1) * 2 - 1 if f in by_frame else torch.zeros(3, H, W)
        assert torch.allclose(c.video[0, :, f], want, atol=1e-6), f
    assert [p.index for p in c.placements] == sorted(frames)
    for p in c.placements:
        assert (p.slot, p.channel) == packing.latent_slot(p.index)
        assert f"frame {p.index}" in c.describe() and f"latent slot {p.slot}" in c.describe()


def test_latent_slot_table():
    assert packing.latent_slot(0) == (0, None)
    assert [packing.latent_slot(i) for i in (1, 2, 3, 4, 5, 8, 9, 80)] == [
        (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 3), (3, 0), (20, 3)]


def test_first_frame_mask_equals_diffusers_construction():
    # diffusers WanImageToVideoPipeline.prepare_latents, written out for 81 frames with the first frame given
    f, t = 81, 21
    ref = torch.ones(1, 1, f, h, w)
    ref[:, :, 1:] = 0
    ref = torch.cat([ref[:, :, :1].repeat_interleave(4, dim=2), ref[:, :, 1:]], dim=2)
    ref = ref.view(1, -1, 4, h, w).transpose(1, 2)
    ours = packing.build_wan_condition(Guide().with_keyframe(image(), 0), f, H, W).mask
    assert ours.shape == (1, 4, t, h, w) and torch.equal(ours, ref)


def test_motion_mask_keeps_outside_known_on_every_frame():
    img = image(3)
    move = torch.zeros(1, H, W)
    move[:, :, : W // 2] = 1.0  # the left half may move
    g = Guide().with_keyframe(img, 0).with_motion_mask(move)
    c = packing.build_wan_condition(g, 9, H, W)
    still = torch.zeros(h, w)
    still[:, w // 2:] = 1.0
    exp = torch.zeros(4, 3, h, w)
    exp[:, 0] = 1.0
    exp[:, 1:] = still
    assert torch.equal(c.mask[0], exp)
    pm = img.permute(2, 0, 1) * 2 - 1
    for f in range(1, 9):
        assert torch.allclose(c.video[0, :, f, :, W // 2:], pm[:, :, W // 2:], atol=1e-6)
        assert torch.count_nonzero(c.video[0, :, f, :, : W // 2]) == 0
    assert "motion mask" in c.describe()


@pytest.mark.parametrize("strength", [0.5, 0.8, 1.0])
def test_strength_from_half_counts_as_one(strength):
    g = Guide().with_keyframe(image(4), 0).with_keyframe(image(5), 4, strength=strength)
    c = packing.build_wan_condition(g, 5, H, W)
    assert torch.equal(c.mask[0, 3, 1], torch.ones(h, w))
    assert torch.allclose(c.video[0, :, 4], image(5).permute(2, 0, 1) * 2 - 1, atol=1e-6)
    note = f"keyframe at frame 4: strength {strength:g} counts as 1"
    assert (note in c.describe()) == (strength < 1.0)


@pytest.mark.parametrize("strength", [0.0, 0.3, 0.49])
def test_strength_below_half_is_an_error_not_a_dropped_keyframe(strength):
    g = Guide().with_keyframe(image(4), 0).with_keyframe(image(5), -1, strength=strength)
    with pytest.raises(AnimeVideoInputError, match=r"^strength: the keyframe at frame 8 has strength") as e:
        packing.build_wan_condition(g, 9, H, W)
    assert "binary" in str(e.value) and "remove the keyframe" in str(e.value)


def test_strength_counts_as_one_in_the_static_region_too():
    """A motion mask's static region follows the mask alone (strength 0.6 does not move the 0.5 threshold)."""
    move = torch.zeros(1, H, W)
    move[:, :, : W // 2] = 0.3  # a faint stroke: 0.7 still, given at strength 1 but not at 0.6 * 0.7 = 0.42
    g = Guide().with_keyframe(image(6), 0, strength=0.6).with_motion_mask(move)
    c = packing.build_wan_condition(g, 5, H, W)
    assert torch.equal(c.mask[0], torch.ones(4, 2, h, w))
    assert torch.allclose(c.video[0, :, 3], image(6).permute(2, 0, 1) * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("num_frames,index,off_grid", [(81, 0, False), (81, 40, False), (81, -1, False),
                                                       (81, 37, True), (81, 4, True), (85, -1, True)])
def test_keyframes_off_anisoras_multiples_of_8_are_reported_not_moved(num_frames, index, off_grid):
    g = Guide().with_keyframe(image(0), 0).with_keyframe(image(1), index)
    c = packing.build_wan_condition(g, num_frames, H, W)
    at = index % num_frames
    assert c.placements[-1].index == at  # lands where asked: slot (i-1)//4+1, channel (i-1)%4
    if at:
        assert c.mask[0, (at - 1) % 4, (at - 1) // 4 + 1].min() == 1.0
    assert (f"keyframe at frame {at} is not a multiple of 8" in c.describe()) == off_grid
    if off_grid:
        lo = at - at % 8
        near = f"frame {lo} or {lo + 8} would" if lo + 8 < num_frames else f"frame {lo} would"
        assert near in c.describe()
        assert ("8k+1 clip" in c.describe()) == (at == num_frames - 1)


def test_soft_mask_edges_are_binarised():
    move = torch.zeros(1, H, W)
    move[:, :, :20] = 1.0
    move[:, :, 20:28] = torch.linspace(1, 0, 8)  # a soft brush edge
    c = packing.build_wan_condition(Guide().with_keyframe(image(), 0).with_motion_mask(move), 5, H, W)
    assert set(c.mask.unique().tolist()) == {0.0, 1.0}
    known_px = (c.video[0, :, 1] != 0).any(0)  # guide pixels present exactly where the binary mask says given
    assert torch.equal(known_px[:, :20], torch.zeros(H, 20, dtype=torch.bool))
    assert bool(known_px[:, 28:].all())
    assert "binary mask" in c.describe()


def test_pack_mask_reshape_by_hand():
    known = torch.arange(9, dtype=torch.float32)[:, None, None].expand(9, 1, 1)
    packed = packing.pack_mask(known)[:, :, 0, 0]  # [4 channels, 3 slots]
    assert packed.tolist() == [[0, 1, 5], [0, 2, 6], [0, 3, 7], [0, 4, 8]]


@pytest.mark.parametrize("n,snapped", [(81, 81), (80, 81), (82, 81), (10, 9), (11, 13), (1, 1), (2, 1), (3, 5)])
def test_num_frames_snapped_to_4k_plus_1(n, snapped):
    got, note = packing.snap_num_frames(n)
    assert got == snapped and (note is None) == (n == snapped)
    if note:
        assert str(snapped) in note


def test_snapped_count_reported_in_describe():
    c = packing.build_wan_condition(Guide().with_keyframe(image(), 0), 10, H, W)
    assert c.num_frames == 9 and "using 9" in c.describe()


def test_bad_inputs_have_clear_errors():
    g = Guide().with_keyframe(image(), 9)
    with pytest.raises(AnimeVideoInputError, match="frame_index"):
        packing.build_wan_condition(g, 9, H, W)
    with pytest.raises(AnimeVideoInputError, match="multiple of 16"):
        packing.build_wan_condition(Guide().with_keyframe(image(), 0), 9, 40, W)
    with pytest.raises(AnimeVideoInputError, match="no keyframe"):
        packing.build_wan_condition(Guide(), 9, H, W)
    with pytest.raises(AnimeVideoInputError, match="num_frames"):
        packing.snap_num_frames(0)


def test_keyframe_of_another_size_is_fitted():
    small = torch.rand(16, 24, 3)
    c = packing.build_wan_condition(Guide().with_keyframe(small, 0), 5, H, W, fit="stretch")
    assert c.video.shape == (1, 3, 5, H, W) and float(c.mask[0, :, 0].min()) == 1.0
