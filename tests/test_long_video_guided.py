"""Guides (keyframes at any frame, motion masks) on long SVD clips sampled in overlapping segments
(pipelines/long_video/svd_long.py with pipelines/svd/guided.py), on the tiny random-weight SVD."""
import importlib

import pytest
import torch

from animevideo.pipelines.guides import Guide
from animevideo.pipelines.long_video import sampler as lv
from animevideo.pipelines.long_video import svd_long
from animevideo.pipelines.long_video.segments import LongVideoOptions, Segment
from animevideo.pipelines.svd import guided, pipeline

svd_nodes = importlib.import_module("animevideo.nodes.svd")
guide_nodes = importlib.import_module("animevideo.nodes.guides")

H = W = 64
# 9 frames in segments of 4 overlapping by 2: 0-3, 2-5, 4-7 and the shifted tail 5-8 (3 known frames)
OPTS = LongVideoOptions(segment_length=4, overlap=2, shift=1)
LONG = 9


@pytest.fixture(scope="module")
def model(tiny_svd_model, one_thread):
    return tiny_svd_model


@pytest.fixture(scope="module")
def pictures():
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, H, W, generator=gen) for _ in range(4)]


def hwc(x):
    return x[0].permute(1, 2, 0)


def request(num_frames=LONG, **kw):
    return pipeline.SVDRequest(**{**dict(num_frames=num_frames, steps=3, decode_chunk_size=num_frames,
                                         max_cfg=2.5, seed=3), **kw})


def left_half_mask():
    m = torch.zeros(H, W)
    m[:, :W // 2] = 1  # the left half may move: latent columns 0..3, dilated to 0..4; 5..7 held
    return m


def run_long(model, image, req, plan, opts=OPTS, monkeypatch=None):
    """The long run plus each pass's final latents [T, C, h, w] (spy on LongSampler.on_segment)."""
    passes = []
    real = lv.LongSampler.sample

    def spy(self, *a, **k):
        self.on_segment = lambda p, x: passes.append((p, x.clone()))
        return real(self, *a, **k)

    monkeypatch.setattr(lv.LongSampler, "sample", spy)
    try:
        res = svd_long.long_image_to_video(model, image, req, opts, guide=plan)
    finally:
        monkeypatch.setattr(lv.LongSampler, "sample", real)
    return res, passes


def assert_overlaps_bit_identical(res, passes):
    checked = 0
    for (pa, xa), (pb, xb) in zip(passes, passes[1:]):
        for j in range(pb.segment.known):
            fr = pb.segment.start + j
            assert torch.equal(xa[pa.num_ref_frames + fr - pa.segment.start], xb[pb.num_ref_frames + j]), fr
            assert torch.equal(res.latents[0, fr], xb[pb.num_ref_frames + j])
            checked += 1
    return checked


# ---------------------------------------------------------------------------------------------
# One segment: the guided long sampler is the guided stock sampler, bit for bit
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_cfg", [1.0, 2.5])
def test_one_segment_guided_equals_stock_guided_bit_for_bit(model, pictures, max_cfg):
    a, b = pictures[:2]
    g = Guide().with_keyframe(hwc(a), 0).with_keyframe(hwc(b), -1, 0.5).with_motion_mask(left_half_mask())
    req = request(num_frames=4, max_cfg=max_cfg, decode_chunk_size=4)
    plan = guided.plan_svd_guide(model, g, a, 4, "crop")
    stock = pipeline.image_to_video(model, a, req, pipeline.SVDRunHooks(denoised_hooks=[plan.hook()]))
    long = svd_long.long_image_to_video(model, a, req, LongVideoOptions(segment_length=4, overlap=2), guide=plan)
    assert torch.equal(long.latents, stock.latents)
    assert torch.equal(long.frames, stock.frames)
    unguided = svd_long.long_image_to_video(model, a, req, LongVideoOptions(segment_length=4, overlap=2))
    assert not torch.equal(unguided.latents, long.latents)
    assert unguided.guide_info == "" and unguided.guide_landings == []


# ---------------------------------------------------------------------------------------------
# Keyframes in different segments, one inside an overlap, the last via -1
# ---------------------------------------------------------------------------------------------

def test_keyframes_across_segments_land_exactly_and_overlaps_stay_bit_identical(model, pictures, monkeypatch):
    a, b, c, d = pictures
    # frame 3: new in segment 0, overlapped in segment 1; frame 6: new in segment 2, overlapped in the tail
    # segment 3; -1: frame 8, new in segment 3
    g = (Guide().with_keyframe(hwc(a), 0).with_keyframe(hwc(b), 3).with_keyframe(hwc(c), 6)
         .with_keyframe(hwc(d), -1))
    plan = guided.plan_svd_guide(model, g, a, LONG, "crop")
    assert plan.keyframe_frames == [0, 3, 6, 8]
    res, passes = run_long(model, a, request(), plan, monkeypatch=monkeypatch)
    assert [(p.segment.start, p.segment.known, p.num_ref_frames) for p, _ in passes] == \
        [(0, 0, 0), (2, 2, 3), (4, 2, 3), (5, 3, 3)]
    lat = guided.encode_latents(model.vae, torch.cat([a, b, c, d]), model.vae_scaling_factor)
    # the final latents of the keyframes are the guide latents, bit for bit (the last step lands on D' = g)
    assert torch.equal(res.latents[0, [0, 3, 6, 8]], lat)
    assert torch.equal(plan.latents[[0, 3, 6, 8]], lat)
    # ... in every pass that shows them, including the overlapped copies
    for p, x in passes:
        for k, fr in enumerate([0, 3, 6, 8]):
            if p.segment.start <= fr < p.segment.end:
                assert torch.equal(x[p.num_ref_frames + fr - p.segment.start], lat[k]), (p.segment.index, fr)
    assert assert_overlaps_bit_identical(res, passes) == 2 + 2 + 3
    # reference-path positions are left alone: the prev-reference positions are not pulled to the guide
    p1, x1 = passes[1]
    assert p1.frames[1:3] == [2, 3] and not torch.equal(x1[2], lat[1])

    # the first segment is the stock guided clip of its 4 frames (keyframes 0 and 3 there)
    g4 = Guide().with_keyframe(hwc(a), 0).with_keyframe(hwc(b), 3)
    plan4 = guided.plan_svd_guide(model, g4, a, 4, "crop")
    stock = pipeline.image_to_video(model, a, request(num_frames=4, decode_chunk_size=4),
                                    pipeline.SVDRunHooks(denoised_hooks=[plan4.hook()]))
    assert torch.equal(res.latents[:, :4], stock.latents)
    # unguided frames differ from the unguided long clip (the guide acts through its neighbours too)
    plain = svd_long.long_image_to_video(model, a, request(), OPTS)
    assert (plain.latents[0, [0, 3, 6, 8]] - lat).abs().mean() > 0.05
    assert not torch.equal(plain.latents[0, 4], res.latents[0, 4])

    # where each keyframe landed: (global frame, segment, position)
    got = {(x.frame, x.segment, x.position, x.video_position, x.overlapped) for x in res.guide_landings}
    assert got == {(0, 0, 0, 0, False), (3, 0, 3, 3, False), (3, 1, 4, 1, True),
                   (6, 2, 5, 2, False), (6, 3, 4, 1, True), (8, 3, 6, 3, False)}
    info = res.guide_info
    assert "keyframe 2 at frame 3: segment 0 position 3, new frame; segment 1 position 4 (after 3 " \
           "reference-path positions: video position 1), overlapped" in info
    assert "keyframe 4 at frame 8: segment 3 position 6" in info


@pytest.mark.parametrize("fresh_noise", [False, True])
def test_keyframe_strength_in_an_overlap_is_applied_identically_in_both_passes(model, pictures, monkeypatch,
                                                                               fresh_noise):
    a, b = pictures[:2]
    opts = LongVideoOptions(segment_length=4, overlap=2, shift=1, fresh_noise_new_frames=fresh_noise)
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(hwc(b), 3, strength=0.5), a, 6, "crop")
    res, passes = run_long(model, a, request(num_frames=6, max_cfg=1.0, decode_chunk_size=6), plan, opts,
                           monkeypatch)
    assert len(passes) == 2 and passes[1][0].segment.known == 2
    assert assert_overlaps_bit_identical(res, passes) == 2
    # half strength: the frame moved towards the guide but is not the guide
    lat = plan.latents[3]
    plain = svd_long.long_image_to_video(model, a, request(num_frames=6, max_cfg=1.0, decode_chunk_size=6), opts)
    assert 0 < (res.latents[0, 3] - lat).abs().mean() < (plain.latents[0, 3] - lat).abs().mean()


# ---------------------------------------------------------------------------------------------
# Motion mask over a multi-segment clip
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_keyframe", [False, True])
def test_motion_mask_holds_the_static_region_on_every_frame_of_every_segment(model, pictures, monkeypatch,
                                                                            with_keyframe):
    a, b = pictures[:2]
    g = Guide()
    if with_keyframe:  # frames 0..3 hold a's still part, 4..8 b's (nearest keyframe)
        g = g.with_keyframe(hwc(a), 0).with_keyframe(hwc(b), 7)
    plan = guided.plan_svd_guide(model, g.with_motion_mask(left_half_mask()), a, LONG, "crop")
    res, passes = run_long(model, a, request(), plan, monkeypatch=monkeypatch)
    held = plan.held()[:, 0]  # [F, h, w]
    assert torch.all(held[:, :, 5:]) and (with_keyframe or not torch.any(held[:, :, :5]))
    out = res.latents[0]
    mask = held[:, None].expand_as(out)
    assert torch.equal(out[mask], plan.latents[mask])  # exactly the guide, on every frame
    lat_a = guided.encode_latents(model.vae, a, model.vae_scaling_factor)[0]
    if with_keyframe:
        lat_b = guided.encode_latents(model.vae, b, model.vae_scaling_factor)[0]
        assert torch.equal(out[3, :, :, 5:], lat_a[:, :, 5:]) and torch.equal(out[4, :, :, 5:], lat_b[:, :, 5:])
        assert torch.equal(out[7], lat_b) and "keyframe 2 at frame 7: segment 2 position 6" in res.guide_info
    else:
        assert torch.equal(out[:, :, :, 5:], lat_a[None, :, :, 5:].expand(LONG, -1, -1, -1))
    # the moving region moved, in every segment's new frames
    free = ~mask
    assert (out[free] - plan.latents[free]).abs().mean() > 0.05
    for p, _ in passes[1:]:
        new = list(p.segment.new_frames)
        assert (out[new][:, :, :, :4] - plan.latents[new][:, :, :, :4]).abs().mean() > 0.05
    assert assert_overlaps_bit_identical(res, passes) == 7
    assert "motion mask: static region held on every frame, in all 4 segments" in res.guide_info


def test_guide_positions_of_each_pass_layout():
    sampler = lv.LongSampler(make_denoiser=None, options=LongVideoOptions(segment_length=4, overlap=2),
                             first_with_reference_path=False)
    ref = [lv.ReferenceCond(None, None, None, 0)]
    segs = [Segment(0, 0, 4, 0), Segment(1, 2, 4, 2), Segment(2, 4, 4, 2, pad=1)]  # tail="pad", 7 frames
    frames = [svd_long.guide_frames(sampler.pass_for(s, segs, ref)) for s in segs]
    assert frames[0] == [0, 1, 2, 3]
    assert frames[1] == [-1, -1, -1, 2, 3, 4, 5]  # reference image + 2 prev-reference positions left alone
    assert frames[2] == [-1, -1, -1, 4, 5, 6, -1]  # padding left alone


def test_tail_pad_with_a_last_frame_keyframe(model, pictures, monkeypatch):
    a, b = pictures[:2]
    opts = LongVideoOptions(segment_length=4, overlap=2, shift=1, tail="pad")
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(hwc(b), -1), a, 7, "crop")
    res, passes = run_long(model, a, request(num_frames=7, decode_chunk_size=7), plan, opts, monkeypatch)
    assert passes[-1][0].segment.pad == 1 and res.latents.shape[1] == 7
    assert torch.equal(res.latents[0, 6], plan.latents[6])
    p, x = passes[-1]
    assert not torch.equal(x[-1], plan.latents[6])  # the padded copy is not held
    assert_overlaps_bit_identical(res, passes)


def test_plan_length_must_match_the_request(model, pictures):
    a, b = pictures[:2]
    plan = guided.plan_svd_guide(model, Guide().with_keyframe(hwc(b), -1), a, 5, "crop")
    with pytest.raises(ValueError, match="planned for 5 frames"):
        svd_long.long_image_to_video(model, a, request(), OPTS, guide=plan)


# ---------------------------------------------------------------------------------------------
# The sampler node with both inputs connected
# ---------------------------------------------------------------------------------------------

SMALL = dict(width=64, height=64, fit="crop", num_frames=7, fps=8.0, motion_bucket_id=127,
             augmentation_level=0.02, steps=2, min_cfg=1.0, max_cfg=2.5, seed=1, decode_chunk_size=7)


@pytest.fixture
def svd_handle(models_env):
    return svd_nodes.AnimeVideoLoadSVD().load("svd_xt.safetensors", "auto")[0]


def test_sampler_node_runs_guide_and_long_video_and_reports_landings(svd_handle):
    gen = torch.Generator().manual_seed(5)
    first, mid, last = (torch.rand(1, 64, 64, 3, generator=gen) for _ in range(3))
    (g,) = guide_nodes.AnimeVideoKeyframe().add(first, 0, 1.0)
    (g,) = guide_nodes.AnimeVideoKeyframe().add(mid, 3, 1.0, guide=g)
    (g,) = guide_nodes.AnimeVideoKeyframe().add(last, -1, 1.0, guide=g)
    from animevideo.nodes.lvcd import AnimeVideoLongVideoOptions

    (opts,) = AnimeVideoLongVideoOptions().build(4, 2, 10.0, 1, True, True, False, "shift_back")
    frames, latent, fps, info = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, first, **SMALL, guide=g,
                                                                        long_video=opts)
    assert frames.shape == (7, 64, 64, 3) and fps == 8.0
    model = svd_handle.model
    lat = guided.encode_latents(model.vae, torch.cat([first, mid, last]).permute(0, 3, 1, 2),
                                model.vae_scaling_factor)
    torch.testing.assert_close(latent["samples"][[0, 3, 6]], lat / model.vae_scaling_factor, rtol=0, atol=1e-6)
    # segments 0-3, 2-5, shifted tail 3-6 (known 3)
    assert "in 3 segments (start, known): (0, 0), (2, 2), (3, 3)" in info
    assert "frame_index -1 -> frame 6 (frame_index -1 counts from the end)" in info
    assert "keyframe 1 at frame 0: segment 0 position 0, new frame" in info
    assert ("keyframe 2 at frame 3: segment 0 position 3, new frame; segment 1 position 4 (after 3 "
            "reference-path positions: video position 1), overlapped") in info
    assert "segment 2 position 3 (after 3 reference-path positions: video position 0), overlapped" in info
    assert "keyframe 3 at frame 6: segment 1 position" not in info
    assert "keyframe 3 at frame 6: segment 2 position 6 (after 3 reference-path positions: video position 3), " \
           "new frame" in info

    # a motion mask through the node: the still columns hold the conditioning image on all 7 frames
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :16] = 1  # latent cols 0..1 move, dilated to 0..2; 3..7 held
    (gm,) = guide_nodes.AnimeVideoMotionMask().add(mask)
    _, latent_m, _, info_m = svd_nodes.AnimeVideoSVDSampler().sample(svd_handle, first, **SMALL, guide=gm,
                                                                     long_video=opts)
    still = guided.encode_latents(model.vae, first.permute(0, 3, 1, 2), model.vae_scaling_factor)[0]
    torch.testing.assert_close(latent_m["samples"][:, :, :, 3:],
                               (still / model.vae_scaling_factor)[None, :, :, 3:].expand(7, -1, -1, -1),
                               rtol=0, atol=1e-6)
    assert "motion mask: static region held on every frame, in all 3 segments" in info_m


def test_sixty_frames_default_segments_keyframes_at_0_30_and_last(model, pictures, monkeypatch):
    """A 60-frame clip in the default segments of 14 overlapping by 4 (0-13, 10-23, 20-33,
    30-43, 40-53 and the shifted tail 46-59 with 8 known frames), small frames to stay fast."""
    a, b, c, _ = (torch.nn.functional.interpolate(p, size=(32, 32), mode="area") for p in pictures)
    g = Guide().with_keyframe(hwc(a), 0).with_keyframe(hwc(b), 30).with_keyframe(hwc(c), -1) \
        .with_motion_mask(left_half_mask())
    plan = guided.plan_svd_guide(model, g, a, 60, "crop")
    req = request(num_frames=60, steps=2, max_cfg=1.0, decode_chunk_size=15)
    res, passes = run_long(model, a, req, plan, LongVideoOptions(), monkeypatch)
    assert [(p.segment.start, p.segment.known) for p, _ in passes] == \
        [(0, 0), (10, 4), (20, 4), (30, 4), (40, 4), (46, 8)]
    out = res.latents[0]
    held = plan.held()[:, 0][:, None].expand_as(out)
    assert torch.equal(out[held], plan.latents[held])
    lat = guided.encode_latents(model.vae, torch.cat([a, b, c]), model.vae_scaling_factor)
    assert torch.equal(out[[0, 30, 59]], lat)
    assert assert_overlaps_bit_identical(res, passes) == 4 * 4 + 8
    got = [(x.frame, x.segment, x.position, x.overlapped) for x in res.guide_landings]
    assert got == [(0, 0, 0, False), (30, 2, 15, False), (30, 3, 5, True), (59, 5, 18, False)]
    assert res.frames.shape == (60, 32, 32, 3)
