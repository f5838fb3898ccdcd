"""LVCD colorization end to end on the tiny LVCD (real file layouts, real loader): the overlap invariant with the
LVCD denoiser, any length, references, colour handling, bad input, and the nodes."""
import importlib

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.long_video import sampler as lv
from animevideo.pipelines.long_video.segments import LongVideoOptions
from animevideo.pipelines.lvcd import colorize as lc
from animevideo.pipelines.lvcd import tiny as lvcd_tiny
from animevideo.pipelines.lvcd.loader import load_lvcd

H, W = 32, 32
OPTS = LongVideoOptions(segment_length=4, overlap=2, shift=1)


@pytest.fixture(scope="module")
def lvcd_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("lvcd")
    lvcd_tiny.write_tiny_lvcd(str(root))
    return load_lvcd(str(root / "checkpoints" / "svd.safetensors"), str(root / "lvcd" / "lvcd-fp16.safetensors"),
                     torch.float32)


def hints(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, H, W, generator=g) > 0.8).float().expand(-1, 3, -1, -1).contiguous()


def ref_image(seed=1, h=H, w=W):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def passes(monkeypatch):
    seen = []
    real = lv.LongSampler.sample

    def spy(self, *a, **k):
        self.on_segment = lambda p, x: seen.append((p, x.clone()))
        return real(self, *a, **k)

    monkeypatch.setattr(lv.LongSampler, "sample", spy)
    return seen


def test_overlapped_frames_bit_identical_with_lvcd_denoiser(lvcd_model, passes, one_thread):
    steps = []
    cb = lc.ColorizeCallbacks(on_step=lambda i, st: steps.append(i))
    out = lc.colorize(lvcd_model, [(ref_image(), 0)], hints(7), lc.ColorizeOptions(long_video=OPTS), steps=2,
                      seed=3, callbacks=cb)
    assert out.shape == (7, H, W, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert steps == [0, 0, 1, 1, 2, 2]  # progress = segments x steps
    assert [(p.segment.start, p.segment.known) for p, _ in passes] == [(0, 0), (2, 2), (3, 3)]
    assert all(p.plan is not None and p.num_ref_frames == 3 for p, _ in passes)
    n = 0
    for (pa, xa), (pb, xb) in zip(passes, passes[1:]):
        for j in range(pb.segment.known):
            f = pb.segment.start + j
            assert torch.equal(xa[pa.num_ref_frames + f - pa.segment.start], xb[pb.num_ref_frames + j]), f
            n += 1
    assert n == 5


def test_prev_reference_attention_changes_only_later_segments(lvcd_model, passes, one_thread):
    lc.colorize(lvcd_model, [(ref_image(), 0)], hints(6), lc.ColorizeOptions(long_video=OPTS), steps=1, seed=0)
    off = LongVideoOptions(segment_length=4, overlap=2, shift=1, prev_reference=False)
    lc.colorize(lvcd_model, [(ref_image(), 0)], hints(6), lc.ColorizeOptions(long_video=off), steps=1, seed=0)
    on_passes, off_passes = passes[:2], passes[2:]
    assert torch.equal(on_passes[0][1], off_passes[0][1])  # the first segment has no prev-reference
    assert not off_passes[1][0].plan.has_bias and on_passes[1][0].plan.has_bias
    assert not torch.equal(on_passes[1][1][5:], off_passes[1][1][5:])  # new frames of the second segment


def test_fewer_frames_than_a_segment_and_size_mismatch(lvcd_model, passes, one_thread):
    out = lc.colorize(lvcd_model, [(ref_image(h=48, w=40), 0)], hints(2), lc.ColorizeOptions(long_video=OPTS),
                      steps=1, seed=0)
    assert out.shape == (2, H, W, 3)
    assert len(passes) == 1 and len(passes[0][0].frames) == 3 + 2


def test_multiple_references_each_segment_uses_the_nearest(lvcd_model, passes, one_thread):
    refs = [(ref_image(1), 0), (ref_image(2), 9)]
    lc.colorize(lvcd_model, refs, hints(10), lc.ColorizeOptions(long_video=OPTS), steps=1, seed=0)
    picks = [p.reference for p, _ in passes]
    assert picks[0] == 0 and picks[-1] == 1 and picks == sorted(picks)


def test_color_match_matches_reference_statistics():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(5, 8, 8, 3, generator=g) * 0.3 + 0.1
    ref = torch.rand(1, 3, 8, 8, generator=g) * 0.6 + 0.2
    lc.color_match(frames, ref)
    flat = frames.reshape(-1, 3)
    r = ref.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(flat.mean(0), r.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(0, unbiased=False), r.std(0, unbiased=False), atol=1e-4, rtol=0)


def test_bad_inputs_are_named(lvcd_model):
    opts = lc.ColorizeOptions(long_video=OPTS)
    with pytest.raises(AnimeVideoInputError, match="lineart"):
        lc.colorize(lvcd_model, [(ref_image(), 0)], hints(0), opts, steps=1)
    with pytest.raises(AnimeVideoInputError, match="multiple of 8"):
        lc.colorize(lvcd_model, [(ref_image(), 0)], hints(3)[:, :, :30], opts, steps=1)
    with pytest.raises(AnimeVideoInputError, match="overlap"):
        lc.colorize(lvcd_model, [(ref_image(), 0)], hints(3),
                    lc.ColorizeOptions(long_video=LongVideoOptions(segment_length=4, overlap=4)), steps=1)
    with pytest.raises(AnimeVideoInputError, match="reference_frame_indices"):
        lc.colorize(lvcd_model, [(ref_image(), 5)], hints(3), opts, steps=1)


# ---------------------------------------------------------------- nodes
def test_nodes_end_to_end(models_env, one_thread):
    lvcd_nodes = importlib.import_module("animevideo.nodes.lvcd")
    svd_nodes = importlib.import_module("animevideo.nodes.svd")
    spec = lvcd_nodes.AnimeVideoLoadLVCD.INPUT_TYPES()["required"]
    assert "lvcd-fp16.safetensors" in spec["lvcd_name"][0]
    assert spec["lvcd_name"][1]["default"] == "lvcd-fp16.safetensors"
    assert lvcd_nodes.AnimeVideoLoadLVCD.VALIDATE_INPUTS("svd.safetensors", "nope.safetensors") is not True
    model = lvcd_nodes.AnimeVideoLoadLVCD().load("svd.safetensors", "lvcd-fp16.safetensors", "fp32")[0]
    (opts,) = lvcd_nodes.AnimeVideoLongVideoOptions().build(4, 2, 10.0, 1, True, True, False, "shift_back")
    with pytest.raises(AnimeVideoInputError, match="overlap"):
        lvcd_nodes.AnimeVideoLongVideoOptions().build(4, 4, 10.0, 1, True, True, False, "shift_back")
    lineart = 1 - hints(5).permute(0, 2, 3, 1)  # black lines on white, auto-detected
    lineart = torch.nn.functional.interpolate(lineart.permute(0, 3, 1, 2), size=(40, 48)).permute(0, 2, 3, 1)
    refs = torch.rand(2, 40, 48, 3)
    (frames,) = lvcd_nodes.AnimeVideoLVCDColorize().colorize(
        model, refs, lineart, 32, 32, "crop", 1, 0, True, "auto", reference_frame_indices="0, 4", long_video=opts)
    assert frames.shape == (5, 32, 32, 3) and torch.isfinite(frames).all()
    with pytest.raises(AnimeVideoInputError, match="reference_frame_indices"):
        lvcd_nodes.AnimeVideoLVCDColorize().colorize(model, refs, lineart, 32, 32, "crop", 1, 0, False, "auto",
                                                     reference_frame_indices="0")
    # long SVD image-to-video through the SVD sampler node
    svd = svd_nodes.AnimeVideoLoadSVD().load("svd.safetensors", "fp32")[0]
    out = svd_nodes.AnimeVideoSVDSampler().sample(svd, torch.rand(1, 32, 32, 3), 32, 32, "crop", 7, 7.0, 127, 0.02,
                                                  1, 1.0, 2.0, 0, 4, long_video=opts)
    assert out[0].shape == (7, 32, 32, 3) and out[1]["samples"].shape[0] == 7
    assert "3 segments" in out[3]


def test_pad_tail_repeats_the_last_lineart_and_trims(lvcd_model, passes, one_thread, monkeypatch):
    from animevideo.pipelines.lvcd import denoiser as lvcd_denoiser

    seen_hints = []
    real_init = lvcd_denoiser.LVCDDenoiser.__init__

    def spy(self, model, hints, plan, control_scale=1.0):
        seen_hints.append(hints.clone())
        real_init(self, model, hints, plan, control_scale)

    monkeypatch.setattr(lvcd_denoiser.LVCDDenoiser, "__init__", spy)
    h = hints(7)
    opts = LongVideoOptions(segment_length=4, overlap=2, shift=1, tail="pad")
    out = lc.colorize(lvcd_model, [(ref_image(), 0)], h, lc.ColorizeOptions(long_video=opts), steps=1, seed=0)
    assert out.shape[0] == 7
    last = passes[-1][0]
    assert (last.segment.start, last.segment.pad) == (4, 1)
    assert last.frames[-2:] == [6, 6]
    assert torch.equal(seen_hints[-1][-1], h[6]) and torch.equal(seen_hints[-1][0], h[0])  # pos 0 = reference's hint


def test_micro_conditions_and_no_cfg_by_default(lvcd_model, monkeypatch, one_thread):
    from animevideo.pipelines.lvcd import denoiser as lvcd_denoiser

    calls = []
    real_call = lvcd_denoiser.LVCDDenoiser.__call__

    def spy(self, x_in, c_noise, hidden, time_ids, cond_latents, step):
        calls.append((x_in.shape, time_ids.clone()))
        return real_call(self, x_in, c_noise, hidden, time_ids, cond_latents, step)

    monkeypatch.setattr(lvcd_denoiser.LVCDDenoiser, "__call__", spy)
    lc.colorize(lvcd_model, [(ref_image(), 0)], hints(3), lc.ColorizeOptions(long_video=OPTS), steps=2, seed=0)
    assert len(calls) == 2  # one pass, 2 steps, a single (conditional) batch each
    for shape, ids in calls:
        assert shape[0] == 1 and shape[1] == 3 + 3
        assert ids.tolist() == [[6.0, 160.0, 0.0]]  # fps 7 -> id 6, motion 160, cond aug 0


def test_example_lineart_regenerates():
    """scripts/make_example_lineart.py draws the shipped lineart clip (pixels compared, every frame)."""
    import os
    import sys

    import numpy as np
    from PIL import Image, ImageSequence

    from pack_paths import ROOT

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_example_lineart
    finally:
        sys.path.pop(0)
    frames = make_example_lineart.lineart_frames()
    shipped = Image.open(os.path.join(ROOT, "example_inputs", make_example_lineart.LINEART))
    got = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(shipped)]
    assert len(got) == len(frames) == 12
    for a, b in zip(got, frames):
        assert np.array_equal(a, np.asarray(b))
    assert (got[0][..., 0] < 128).mean() > 0.01  # there are lines, dark on white


def test_decode_context_is_the_encoded_reference_latent(lvcd_model, monkeypatch, one_thread):
    """The reference code decodes [encode(I^0) * 0.18215, frames...] in every chunk (sample_func.py: outputs =
    cat([first_cond * scale_factor, x0[-14:]])), not the denoised reference position of the first pass."""
    from animevideo.pipelines.long_video import decode as lv_decode
    from animevideo.pipelines.svd import conditioning

    seen = []
    real = lv_decode.decode_with_context

    def spy(vae, latents, context_latent, scaling_factor, **kw):
        seen.append(context_latent)
        return real(vae, latents, context_latent, scaling_factor, **kw)

    monkeypatch.setattr(lv_decode, "decode_with_context", spy)
    ref = ref_image(4)
    lc.colorize(lvcd_model, [(ref, 0)], hints(3), lc.ColorizeOptions(long_video=OPTS), steps=1, seed=0)
    vae, sf = lvcd_model.svd.vae, lvcd_model.svd.vae_scaling_factor
    expected = conditioning.encode_concat_latent(vae, ref[None], torch.zeros(1, 3, H, W), 0.0)[0].float() * sf
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    # several references: each chunk's context is the nearest reference's encoded latent
    seen.clear()
    refs = [(ref_image(5), 0), (ref_image(6), 9)]
    lc.colorize(lvcd_model, refs, hints(10), lc.ColorizeOptions(long_video=OPTS), steps=1, seed=0)
    ctx = seen[0]
    for first, img in ((0, refs[0][0]), (9, refs[1][0])):
        want = conditioning.encode_concat_latent(vae, img[None], torch.zeros(1, 3, H, W), 0.0)[0].float() * sf
        assert torch.equal(ctx(first), want)
