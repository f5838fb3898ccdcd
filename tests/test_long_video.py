"""Long-video segments, the overlapped-blending sampler and the chunked context decode."""
import itertools
import math

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.long_video import decode as lv_decode
from animevideo.pipelines.long_video import sampler as lv
from animevideo.pipelines.long_video.segments import (LongVideoOptions, Segment, nearest_reference,
                                                      parse_reference_indices, plan_segments,
                                                      spread_reference_indices)
from animevideo.pipelines.svd import sampler as edm


# ---------------------------------------------------------------- segments
@pytest.mark.parametrize("tail", ["shift_back", "pad"])
def test_every_frame_gets_exactly_one_output(tail):
    for length, n, o in itertools.product(range(1, 70), (1, 2, 5, 14), (0, 1, 3, 4, 10, 13)):
        if o >= n:
            continue
        segs = plan_segments(length, n, o, tail)
        produced = [f for s in segs for f in s.new_frames]
        assert produced == list(range(length)), (length, n, o, tail, segs)
        assert segs[0].start == 0 and segs[0].known == 0
        for a, b in zip(segs, segs[1:]):
            assert b.start + b.known == a.end  # new frames follow the previous segment's last one
            assert b.start >= a.start and b.known >= o and b.length == n
            assert b.start - a.start <= n - o  # never a gap
        assert all(s.length == min(n, length) for s in segs)
        if tail == "shift_back":
            assert segs[-1].end == length and all(s.pad == 0 for s in segs)


def test_paper_layout_and_tails():
    # L = 4 + 10k: the paper's segments 1-14, 11-24, 21-34 (1-based)
    segs = plan_segments(34, 14, 4)
    assert [(s.start, s.known) for s in segs] == [(0, 0), (10, 4), (20, 4)]
    assert len(plan_segments(34, 14, 4)) == math.floor((34 - 4) / 10)
    # unaligned: the reference code would drop frames 34..39; we shift the last segment back
    segs = plan_segments(40, 14, 4)
    assert [(s.start, s.known, s.end) for s in segs] == [(0, 0, 14), (10, 4, 24), (20, 4, 34), (26, 8, 40)]
    segs = plan_segments(40, 14, 4, tail="pad")
    assert [(s.start, s.known, s.pad, s.end) for s in segs][-1] == (30, 4, 4, 40)
    assert segs[-1].frame(13) == 39  # padded positions show the last real frame
    # fewer frames than a segment: one short segment (the peer node crashes here)
    assert plan_segments(5, 14, 4) == [Segment(0, 0, 5, 0)]


def test_bad_segment_inputs_name_the_input():
    with pytest.raises(AnimeVideoInputError, match="overlap"):
        plan_segments(20, 14, 14)
    with pytest.raises(AnimeVideoInputError, match="lineart"):
        plan_segments(0, 14, 4, input_name="lineart")
    with pytest.raises(AnimeVideoInputError, match="tail"):
        plan_segments(20, 14, 4, tail="drop")
    with pytest.raises(AnimeVideoInputError, match="segment_length"):
        plan_segments(20, 0, 0)


def test_reference_indices():
    assert spread_reference_indices(1, 50) == [0]
    assert spread_reference_indices(3, 41) == [0, 20, 40]
    assert parse_reference_indices("0, 40", 2, 60) == [0, 40]
    assert parse_reference_indices("", 2, 61) == [0, 60]
    for bad in ("0, x", "0", "0, 99"):
        with pytest.raises(AnimeVideoInputError, match="reference_frame_indices"):
            parse_reference_indices(bad, 2, 60)
    segs = plan_segments(60, 14, 4)
    picks = [nearest_reference(s, [0, 40]) for s in segs]
    assert picks[0] == 0 and picks[-1] == 1 and picks == sorted(picks)


# ---------------------------------------------------------------- sampler with fake denoisers
C, H, W = 4, 4, 4


class MixingDenoiser:
    """Mixes every frame with its neighbours and the conditioning, so without blending the overlapped
    frames of a later pass would come out different."""

    def __init__(self, log=None, p=None):
        self.log, self.p = log, p

    def __call__(self, x_in, c_noise, hidden, time_ids, cond_latents, step):
        if self.log is not None:
            self.log.append((self.p, step, cond_latents.clone(), x_in.clone()))
        mixed = 0.5 * x_in + 0.25 * x_in.roll(1, dims=1) + 0.25 * x_in.roll(-1, dims=1)
        return torch.tanh(mixed + 0.1 * cond_latents + c_noise * 0.01 + hidden.mean() * 0.1)


def refs_for(*frame_indices):
    g = torch.Generator().manual_seed(3)
    return [lv.ReferenceCond(torch.randn(1, 1, 8, generator=g), torch.randn(1, C, H, W, generator=g),
                             torch.tensor([[6.0, 160.0, 0.0]]), fi) for fi in frame_indices]


def run(length, n, o, factory=None, refs=None, steps=3, first_ref=True, **opts):
    passes = []
    sampler = lv.LongSampler(
        make_denoiser=factory or (lambda p: MixingDenoiser()),
        options=LongVideoOptions(segment_length=n, overlap=o, **opts), steps=steps, seed=5,
        first_with_reference_path=first_ref, on_segment=lambda p, x: passes.append((p, x.clone())))
    res = sampler.sample(refs or refs_for(0), length, (C, H, W))
    return res, passes


def overlapped_pairs(passes):
    """(previous pass's final latent, this pass's final latent) for every known frame of every later pass."""
    for (pa, xa), (pb, xb) in zip(passes, passes[1:]):
        sa, sb = pa.segment, pb.segment
        for j in range(sb.known):
            f = sb.start + j
            yield f, xa[pa.num_ref_frames + f - sa.start], xb[pb.num_ref_frames + j]


@pytest.mark.parametrize("length,n,o,tail", [(23, 5, 2, "shift_back"), (24, 5, 2, "pad"), (17, 6, 4, "shift_back"),
                                             (11, 14, 4, "shift_back"), (30, 14, 4, "shift_back"),
                                             (20, 6, 0, "shift_back"), (19, 6, 5, "shift_back")])
def test_overlapped_frames_are_bit_identical(length, n, o, tail):
    res, passes = run(length, n, o, tail=tail)
    assert res.latents.shape == (length, C, H, W) and torch.isfinite(res.latents).all()
    pairs = list(overlapped_pairs(passes))
    assert len(pairs) == sum(p.segment.known for p, _ in passes)
    for f, a, b in pairs:
        assert torch.equal(a, b), f
        assert torch.equal(res.latents[f], a)
    # output = each pass's new frames
    for p, x in passes:
        s = p.segment
        d = p.num_ref_frames
        assert torch.equal(res.latents[s.start + s.known:s.end], x[d + s.known:d + s.end - s.start])


def test_overlapped_frames_follow_the_previous_pass_at_every_step():
    """Eq. 6 acts at EVERY step: a known frame's denoised estimate is the previous pass's estimate of the same
    frame at the same step, and so is its latent x after the step. Final latents alone cannot show this (the
    last Euler step lands on the denoised estimate, so a last-step-only blend gives the same end), hence
    every step's state is recorded and compared."""
    states = {}

    def record(index, st):
        states.setdefault(index, []).append((st.x.clone(), st.denoised.clone()))

    passes = []
    sampler = lv.LongSampler(make_denoiser=lambda p: MixingDenoiser(), options=LongVideoOptions(6, 3), steps=4,
                             seed=5, on_step=record, on_segment=lambda p, x: passes.append(p))
    sampler.sample(refs_for(0), 17, (C, H, W))
    assert len(passes) >= 3
    checked = 0
    for pa, pb in zip(passes, passes[1:]):
        sa, sb = pa.segment, pb.segment
        for j in range(sb.known):
            f = sb.start + j
            ia, ib = pa.num_ref_frames + f - sa.start, pb.num_ref_frames + j
            for step, ((xa, da), (xb, db)) in enumerate(zip(states[sa.index], states[sb.index])):
                assert torch.equal(db[0, ib], da[0, ia]), (f, step)
                assert torch.equal(xb[0, ib], xa[0, ia]), (f, step)
                checked += 1
    assert checked == 4 * sum(p.segment.known for p in passes)
    # and without blending the intermediate estimates of the known frames differ from step 0 on
    states.clear()
    passes.clear()
    sampler.options = LongVideoOptions(6, 3, overlapped_blending=False)
    sampler.sample(refs_for(0), 17, (C, H, W))
    pa, pb = passes[0], passes[1]
    assert not torch.equal(states[1][0][1][0, pb.num_ref_frames],
                           states[0][0][1][0, pa.num_ref_frames + pb.segment.start])


def test_without_blending_overlapped_frames_differ():
    _, passes = run(17, 6, 3, overlapped_blending=False)
    assert any(not torch.equal(a, b) for _, a, b in overlapped_pairs(passes))


def test_fresh_noise_keeps_overlap_identical_and_changes_new_frames():
    a, pa = run(23, 5, 2)
    b, pb = run(23, 5, 2, fresh_noise_new_frames=True)
    assert all(torch.equal(x, y) for _, x, y in overlapped_pairs(pb))
    assert torch.equal(a.latents[:5], b.latents[:5])  # the first pass is the same
    assert not torch.equal(a.latents[5:], b.latents[5:])


def test_noise_roll_matches_reference_code():
    """[eps[0], eps[15..18], eps[15..18], eps[5..14]] for N=14, o=4 (digest B4 step 5)."""
    sampler = lv.LongSampler(make_denoiser=lambda p: MixingDenoiser())
    segs = plan_segments(24, 14, 4)
    refs = refs_for(0)
    p0, p1 = sampler.pass_for(segs[0], segs, refs), sampler.pass_for(segs[1], segs, refs)
    assert len(p0.frames) == len(p1.frames) == 19
    eps = torch.randn(1, 19, C, H, W)
    state = {"ref0": eps[:, 0]}
    new = sampler._noise_for(p1, p0, eps, state, torch.Generator().manual_seed(0), (C, H, W))
    expected = torch.cat([eps[:, :1], eps[:, 15:19], eps[:, 15:19], eps[:, 5:15]], dim=1)
    assert torch.equal(new, expected)


def test_shift_never_leaves_the_video_frames():
    """new frames read frame p - shift, but never before the first video frame: with shift > known (overlap 0,
    or a shift the user set above the overlap) the index must not land on the reference path or wrap around."""
    from animevideo.pipelines.reference_attention.plan import prevref_plan

    for o, v, shift in itertools.product((0, 1, 2, 4), (1, 3, 14), (1, 3, 5, 16)):
        plan = prevref_plan(o, v, shift=shift)
        d = plan.num_ref_frames
        si = plan.self_index.tolist()
        assert si[:d + o] == list(range(min(d + o, d + v)))
        assert all(si[p] == max(p - shift, d) for p in range(d + o, d + v)), (o, v, shift, si)
    assert prevref_plan(4, 14).self_index.tolist() == list(range(9)) + list(range(6, 16))  # the paper's layout
    assert prevref_plan(0, 5, shift=3).self_index.tolist() == [0, 1, 1, 1, 1, 2]


def test_pass_layout_plans_and_concat():
    log = []
    res, passes = run(40, 14, 4, factory=lambda p: MixingDenoiser(log, p), steps=2)
    p0, p1, p2, p3 = [p for p, _ in passes]
    assert p0.frames == [lv.DUMMY] * 5 + list(range(14))
    assert p0.plan.ref_index.tolist() == [0, 1, 2, 3, 4] + [0] * 14 and not p0.plan.has_bias
    assert p1.frames == [lv.DUMMY] + list(range(10, 14)) + list(range(10, 24))
    assert p1.plan.self_index.tolist()[9:] == list(range(6, 16))
    assert p1.plan.ref_index.tolist()[5:9] == [1, 2, 3, 4]
    # shifted last segment: starts at 26, knows 8 frames; prev-ref path = frames 30..33
    assert p3.segment.start == 26 and p3.segment.known == 8
    assert p3.frames[:5] == [lv.DUMMY, 30, 31, 32, 33]
    bias = p3.plan.ref_log_bias.tolist()
    assert [i for i, b in enumerate(bias) if b] == [9, 10, 11, 12] and bias[9] == pytest.approx(math.log(10))
    assert p3.plan.ref_index.tolist()[9:13] == [1, 2, 3, 4]
    # concat: reference latent everywhere, except the prev-ref path = previous final latents / 0.18215
    ref_lat = refs_for(0)[0].latent[0]
    for p, step, cond, _ in log:
        for i, f in enumerate(p.frames):
            want = res.latents[f] / 0.18215 if 0 < i < 5 and f != lv.DUMMY else ref_lat
            assert torch.equal(cond[0, i], want.to(cond.dtype))


def test_first_pass_stock_for_long_svd_and_multiple_references():
    log = []
    refs = refs_for(0, 20)
    res, passes = run(30, 8, 3, factory=lambda p: MixingDenoiser(log, p), refs=refs, first_ref=False, steps=2)
    p0 = passes[0][0]
    assert p0.plan is None and p0.num_ref_frames == 0 and len(p0.frames) == 8
    assert all(p.num_ref_frames == 4 for p, _ in passes[1:])
    assert [p.reference for p, _ in passes][0] == 0 and passes[-1][0].reference == 1
    for f, a, b in overlapped_pairs(passes):
        assert torch.equal(a, b)


def test_progress_counts_segments_times_steps_and_interrupt_stops():
    seen = []
    sampler = lv.LongSampler(make_denoiser=lambda p: MixingDenoiser(), options=LongVideoOptions(5, 2), steps=3,
                             on_step=lambda i, st: seen.append((i, st.step)))
    sampler.sample(refs_for(0), 11, (C, H, W))
    assert seen == [(i, s) for i in range(3) for s in range(3)]

    class Stop(Exception):
        pass

    def stop(i, st):
        if i == 1:
            raise Stop

    sampler.on_step = stop
    with pytest.raises(Stop):
        sampler.sample(refs_for(0), 11, (C, H, W))


# ---------------------------------------------------------------- with the real tiny SVD UNet
def test_overlap_bit_identical_with_tiny_svd_unet(tiny_svd, one_thread):
    unet, _, _ = tiny_svd
    unet.eval()
    refs = [lv.ReferenceCond(torch.randn(1, 1, unet.config.cross_attention_dim), torch.randn(1, 4, 8, 8),
                             torch.tensor([[6.0, 160.0, 0.0]]), 0)]
    passes = []
    sampler = lv.LongSampler(make_denoiser=lambda p: edm.UNetDenoiser(unet), options=LongVideoOptions(4, 2),
                             steps=2, seed=1, on_segment=lambda p, x: passes.append((p, x.clone())))
    res = sampler.sample(refs, 7, (4, 8, 8))  # segments 0-3, 2-5, shifted 3-6
    assert [(p.segment.start, p.segment.known) for p, _ in passes] == [(0, 0), (2, 2), (3, 3)]
    pairs = list(overlapped_pairs(passes))
    assert len(pairs) == 5
    for f, a, b in pairs:
        assert torch.equal(a, b), f
    assert torch.isfinite(res.latents).all() and res.reference_latent.shape == (4, 8, 8)


# ---------------------------------------------------------------- decode
class LocalVAE(torch.nn.Module):
    """Per-frame decoder (no temporal mixing), so chunked decode must equal per-frame decode exactly."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def decode(self, z, num_frames):
        self.calls.append((z.shape[0], num_frames, z.clone()))
        x = torch.nn.functional.interpolate(torch.tanh(z[:, :3]) * self.w * 1.5, scale_factor=8, mode="nearest")

        class Out:
            sample = x

        return Out()


def test_chunk_spans_tile_once():
    assert lv_decode.chunk_spans(20) == [(0, 0, 9), (6, 9, 15), (12, 15, 20)]
    with pytest.raises(ValueError, match="overlap"):
        lv_decode.chunk_spans(10, 4, 1, 3)
    for length, chunk, ctx, ov in itertools.product(range(1, 40), (5, 10), (0, 1), (0, 1, 3)):
        spans = lv_decode.chunk_spans(length, chunk, ctx, ov)
        kept = [f for _, k, e in spans for f in range(k, e)]
        assert kept == list(range(length))
        assert all(e - s <= chunk - ctx and k - s <= ov for s, k, e in spans)


def test_context_decode_counts_and_bounds():
    vae = LocalVAE()
    lat = torch.randn(23, 4, 2, 3)
    ref = torch.randn(4, 2, 3)
    out = lv_decode.decode_with_context(vae, lat, ref, 0.5)
    assert out.shape == (23, 16, 24, 3)
    assert all(n == f and n <= 10 for n, f, _ in vae.calls)
    assert all(torch.equal(z[0], ref / 0.5) for _, _, z in vae.calls)  # every chunk starts with the reference
    per_frame = (torch.tanh(lat[:, :3] / 0.5) * 1.5).clamp(-1, 1) / 2 + 0.5
    per_frame = torch.nn.functional.interpolate(per_frame, scale_factor=8, mode="nearest").permute(0, 2, 3, 1)
    assert torch.equal(out, per_frame)
    assert out.min() == 0 and out.max() == 1  # clamped, not stretched


def test_context_decode_first_chunk_equals_whole_decode(tiny_svd, one_thread):
    _, vae, _ = tiny_svd
    torch.manual_seed(0)
    lat = torch.randn(12, 4, 4, 4)
    ref = torch.randn(4, 4, 4)
    out = lv_decode.decode_with_context(vae, lat, ref, 0.18215, chunk=6, overlap=2)
    with torch.no_grad():
        whole = vae.decode(torch.cat([ref[None], lat[:5]]) / 0.18215, num_frames=6).sample
        later = vae.decode(torch.cat([ref[None], lat[3:8]]) / 0.18215, num_frames=6).sample
    to_img = lambda x: (x.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1)  # noqa: E731
    torch.testing.assert_close(out[:5], to_img(whole[1:]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[5:8], to_img(later[3:]), rtol=0, atol=1e-5)
    assert out.shape[0] == 12
