"""The chunked runner: streaming equals whole-clip processing exactly, tiles within a stated tolerance, the
out-of-memory fallback, Lanczos against PIL, padding of odd sizes, progress, interrupt and bad options."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoMemoryError
from animevideo.pipelines.upscale import loader, stream, tiny

Opts = stream.StreamOptions


@pytest.fixture(scope="module")
def ups(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models"))
    tiny.write_tiny_upscalers(d)
    return {name: loader.load_upscaler(os.path.join(d, rel)) for name, rel in
            (("animesr", tiny.ANIMESR_FILE), ("compact", tiny.COMPACT_FILE), ("rrdb", tiny.RRDB_FILE))}


def clip(n, h, w, seed=0, c=3):
    return torch.rand(n, h, w, c, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Streaming == whole clip
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [True, False])
def test_animesr_streaming_equals_whole_clip_across_chunk_borders(ups, channels_last):
    up, frames = ups["animesr"], clip(7, 16, 20)
    whole = stream.upscale_frames(up, frames, Opts(chunk_size=7, channels_last=channels_last))
    assert whole.shape == (7, 64, 80, 3) and whole.dtype == torch.float32
    for chunk in (1, 2, 3, 6, 100):
        got = stream.upscale_frames(up, frames, Opts(chunk_size=chunk, channels_last=channels_last))
        assert torch.equal(got, whole), chunk
    # the recurrence really carries across frames: frame 3 alone is not frame 3 of the clip
    alone = stream.upscale_frames(up, frames[3:4], Opts(channels_last=channels_last))
    assert not torch.equal(alone[0], whole[3])


def test_animesr_contiguous_layout_reproduces_the_module_forward_bit_for_bit(ups):
    up, frames = ups["animesr"], clip(5, 16, 16, seed=1)
    with torch.no_grad():
        ref = up.model(frames.permute(0, 3, 1, 2)[None].contiguous())[0].clamp(0, 1).permute(0, 2, 3, 1)
    got = stream.upscale_frames(up, frames, Opts(chunk_size=2, channels_last=False))
    assert torch.equal(got, ref)
    # channels-last (the default) differs by float rounding only
    cl = stream.upscale_frames(up, frames, Opts(chunk_size=2))
    torch.testing.assert_close(cl, ref, rtol=0, atol=1e-5)


def test_streaming_is_exact_with_input_rescaling_and_output_scale(ups):
    up, frames = ups["animesr"], clip(5, 20, 24, seed=2)
    opts = dict(input_rescaling=0.5, output_scale=3.0)
    whole = stream.upscale_frames(up, frames, Opts(chunk_size=5, **opts))
    assert whole.shape == (5, 60, 72, 3)
    assert torch.equal(stream.upscale_frames(up, frames, Opts(chunk_size=2, **opts)), whole)
    native = stream.upscale_frames(up, frames, Opts(input_rescaling=0.5))
    assert native.shape == (5, 40, 48, 3)  # x4 of the 10x12 rescaled frames


@pytest.mark.parametrize("name", ["compact", "rrdb"])
def test_spandrel_streaming_equals_spandrel_called_per_frame(ups, name):
    up, frames = ups[name], clip(5, 12, 16, seed=3)
    with torch.no_grad():
        ref = torch.cat([up.descriptor(frames[i:i + 1].permute(0, 3, 1, 2)) for i in range(5)]).permute(0, 2, 3, 1)
    for chunk in (1, 2, 5):
        assert torch.equal(stream.upscale_frames(up, frames, Opts(chunk_size=chunk)), ref)


def test_output_is_written_into_a_given_preallocated_tensor(ups):
    frames = clip(3, 8, 8)
    out = torch.full((3, 32, 32, 3), -1.0)
    got = stream.upscale_frames(ups["compact"], frames, Opts(chunk_size=2), out=out)
    assert got is out and out.min() >= 0 and not out.is_inference()
    with pytest.raises(AnimeVideoInputError, match="out"):
        stream.upscale_frames(ups["compact"], frames, out=torch.empty(3, 31, 32, 3))


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------

# Tiled vs untiled, 48x48 px frames, tiles of 32 px: the difference comes from the context a tile lacks near its
# inner edges, blended away by the linear ramps. Stated tolerances, measured away from a 4 px (input) image
# border: AnimeSR max 0.02 / mean 5e-4 (measured 0.008 / 1e-4 at overlap 8; its state is blended too, so the
# error also travels through the recurrence); Real-ESRGAN Compact and RRDB max 0.005 / mean 2e-4.
TILE_TOL = {"animesr": (0.02, 5e-4), "compact": (0.005, 2e-4), "rrdb": (0.005, 2e-4)}


@pytest.mark.parametrize("name", ["animesr", "compact", "rrdb"])
@pytest.mark.parametrize("overlap", [8, 16])
def test_tiled_equals_untiled_within_tolerance_away_from_the_border(ups, name, overlap):
    up, frames = ups[name], clip(3, 48, 48, seed=4)
    ref = stream.upscale_frames(up, frames, Opts(chunk_size=3))
    got = stream.upscale_frames(up, frames, Opts(chunk_size=2, tile_size=32, tile_overlap=overlap))
    b = 4 * up.scale
    diff = (got - ref)[:, b:-b, b:-b].abs()
    max_tol, mean_tol = TILE_TOL[name]
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, (diff.max().item(), diff.mean().item())
    assert not torch.equal(got, ref)  # tiles really ran


def test_a_tile_covering_the_frame_is_the_untiled_path(ups):
    frames = clip(3, 24, 28)
    for name in ("animesr", "compact"):
        ref = stream.upscale_frames(ups[name], frames)
        assert torch.equal(stream.upscale_frames(ups[name], frames, Opts(tile_size=32)), ref)


def test_tile_starts_are_aligned_and_cover():
    for size, tile, overlap in [(48, 32, 8), (100, 32, 16), (64, 32, 0), (36, 32, 16)]:
        starts = stream.tile_starts(size, tile, overlap, align=4)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(s % 4 == 0 for s in starts)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


class OOMAbove:
    """Wraps a model call and raises torch.OutOfMemoryError whenever the input is larger than ``limit`` px."""

    def __init__(self, fn, limit):
        self.fn, self.limit, self.sizes, self.ooms = fn, limit, [], 0

    def __call__(self, x, *args):
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.fn(x, *args)


@pytest.mark.parametrize("name", ["animesr", "compact"])
def test_out_of_memory_halves_the_tile_and_keeps_it(ups, name, monkeypatch):
    up, frames = ups[name], clip(3, 64, 64, seed=5)
    expected = stream.upscale_frames(up, frames, Opts(tile_size=32))
    target, attr = (up.model, "cell") if up.recurrent else (up, "run_image")
    wrapper = OOMAbove(getattr(target, attr), limit=32)
    monkeypatch.setattr(target, attr, wrapper)
    got = stream.upscale_frames(up, frames, Opts(chunk_size=2))
    assert torch.equal(got, expected)
    assert wrapper.ooms == 1  # whole frame failed once; 32 px tiles were kept for the rest of the clip
    assert max(max(s) for s in wrapper.sizes[1:]) == 32


def test_out_of_memory_below_the_smallest_tile_is_a_clear_error(ups, monkeypatch):
    up = ups["compact"]
    monkeypatch.setattr(up, "run_image", OOMAbove(up.run_image, limit=16))
    with pytest.raises(AnimeVideoMemoryError, match="Out of memory.*tiles of 32 px"):
        stream.upscale_frames(up, clip(2, 64, 64))


# ---------------------------------------------------------------------------------------------
# Sizes, padding and Lanczos
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(13, 18), (1, 1), (2, 7), (5, 4)])
def test_odd_sizes_are_padded_to_a_multiple_of_4_and_cropped_back(ups, h, w):
    up, frames = ups["animesr"], clip(3, h, w, seed=6)
    got = stream.upscale_frames(up, frames, Opts(chunk_size=2, channels_last=False))
    assert got.shape == (3, 4 * h, 4 * w, 3)
    ph, pw = -(-h // 4) * 4, -(-w // 4) * 4
    padded = stream.pad_to(frames.permute(0, 3, 1, 2).contiguous(), ph, pw)
    with torch.no_grad():
        ref = up.model(padded[None])[0][..., :4 * h, :4 * w].clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.equal(got, ref)


def test_pad_to_reflects_then_replicates():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    y = stream.pad_to(x, 4, 8)
    assert y.shape == (1, 1, 4, 8)
    assert y[0, 0, 0].tolist() == [0, 1, 2, 1, 0, 0, 0, 0]  # reflect 2, then replicate
    assert torch.equal(y[0, 0, 2], y[0, 0, 0]) and torch.equal(y[0, 0, 3], y[0, 0, 0])
    assert torch.equal(stream.pad_to(x, 2, 3), x)


def test_one_frame_clips_work_for_every_kind(ups):
    frames = clip(1, 12, 16)
    for up in ups.values():
        assert stream.upscale_frames(up, frames).shape == (1, 48, 64, 3)


def test_grey_and_rgba_frames_are_accepted(ups):
    rgb = clip(2, 8, 8)
    ref = stream.upscale_frames(ups["compact"], rgb)
    rgba = torch.cat((rgb, torch.ones(2, 8, 8, 1)), dim=-1)
    assert torch.equal(stream.upscale_frames(ups["compact"], rgba), ref)
    assert stream.upscale_frames(ups["compact"], rgb[..., :1]).shape == (2, 32, 32, 3)


@pytest.mark.parametrize("n_in,n_out", [(40, 17), (17, 40), (32, 16), (9, 9)])
def test_lanczos_matches_pil(n_in, n_out):
    from PIL import Image

    g = torch.Generator().manual_seed(7)
    img = torch.rand(n_in, n_in + 3, generator=g)
    out_w = max(1, round((n_in + 3) * n_out / n_in))
    pil = Image.fromarray(img.numpy(), mode="F").resize((out_w, n_out), Image.Resampling.LANCZOS)
    ours = stream.lanczos_resize(img[None, None], n_out, out_w, a=3)[0, 0]
    torch.testing.assert_close(ours, torch.from_numpy(np.array(pil)), rtol=0, atol=2e-5)


def test_lanczos_weights_are_normalised_and_identity_at_the_same_size():
    w = stream.lanczos_weights(30, 12)
    torch.testing.assert_close(w.sum(1), torch.ones(12))
    torch.testing.assert_close(stream.lanczos_weights(10, 10), torch.eye(10), rtol=0, atol=1e-6)
    x = clip(1, 5, 5).permute(0, 3, 1, 2)
    assert torch.equal(stream.lanczos_resize(x, 5, 5), x)


# ---------------------------------------------------------------------------------------------
# Progress, interrupt, bad input
# ---------------------------------------------------------------------------------------------

class Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["animesr", "compact"])
def test_progress_counts_frames_and_interrupt_stops_between_frames(ups, name, monkeypatch):
    up = ups[name]
    calls = []
    target, attr = (up.model, "cell") if up.recurrent else (up, "run_image")
    inner = getattr(target, attr)
    monkeypatch.setattr(target, attr, lambda *a: calls.append(1) or inner(*a))
    seen = []
    stream.upscale_frames(up, clip(5, 8, 8), Opts(chunk_size=2), on_frame=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 5) for i in range(1, 6)] and len(calls) == 5

    calls.clear()
    checks = []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise Stop

    with pytest.raises(Stop):
        stream.upscale_frames(up, clip(5, 8, 8), Opts(chunk_size=2), check_interrupt=check)
    assert len(calls) == 2  # frames 1 and 2 ran, the check before frame 3 stopped it


@pytest.mark.parametrize("opts,name", [
    (dict(chunk_size=0), "chunk_size"), (dict(chunk_size=-3), "chunk_size"),
    (dict(tile_size=10), "tile_size"), (dict(tile_size=-1), "tile_size"), (dict(tile_overlap=-1), "tile_overlap"),
    (dict(input_rescaling=0.0), "input_rescaling"), (dict(input_rescaling=1.5), "input_rescaling"),
    (dict(input_rescaling=float("nan")), "input_rescaling"),
    (dict(output_scale=-1.0), "output_scale"), (dict(output_scale=9.0), "output_scale"),
])
def test_bad_options_name_the_input(ups, opts, name):
    with pytest.raises(AnimeVideoInputError, match=f"^{name}:"):
        stream.upscale_frames(ups["compact"], clip(2, 8, 8), Opts(**opts))


@pytest.mark.parametrize("frames", [torch.rand(8, 8, 3), torch.rand(0, 8, 8, 3), torch.rand(2, 8, 8, 2), "x"])
def test_bad_frames_name_the_input(ups, frames):
    with pytest.raises(AnimeVideoInputError, match="^frames:"):
        stream.upscale_frames(ups["animesr"], frames)


def test_half_precision_model_gets_float32_output(ups):
    """The dtype path (fp16 models on a GPU): exercised here with bf16 weights on the CPU, forced past the
    loader's CPU rule."""
    import copy

    up = copy.deepcopy(ups["animesr"])
    up.model.to(torch.bfloat16)
    up.dtype = torch.bfloat16
    frames = clip(3, 8, 8)
    got = stream.upscale_frames(up, frames, Opts(chunk_size=2))
    ref = stream.upscale_frames(ups["animesr"], frames)
    assert got.dtype == torch.float32 and (got - ref).abs().max() < 0.1
    assert F.mse_loss(got, ref) < 1e-3


class TileProbe:
    """A single-image 'model' whose output says which tile made it: half the nearest x4 of the input plus
    0.001 x the column and 0.0005 x the row of the pixel inside the tile's own output (all within 0..1). Untiled, that is the frame's column
    and row; tiled, each seam pixel is the blend of its tiles' local coordinates, so the result shows where
    each tile sits and how it is weighted."""

    scale = 4

    def __call__(self, x):
        out = F.interpolate(x.float(), scale_factor=self.scale, mode="nearest")
        hh, ww = out.shape[-2:]
        cols = torch.arange(ww, dtype=torch.float32).view(1, 1, 1, ww)
        rows = torch.arange(hh, dtype=torch.float32).view(1, 1, hh, 1)
        return 0.5 * out + 0.001 * cols + 0.0005 * rows

    def to(self, device):
        return self


def test_tile_seams_are_blended_with_linear_ramps_float64():
    """Every output pixel = sum over the tiles covering it of w * tile output / sum of w, with w the product of
    the row and column ramps: 1 inside, (k + 0.5)/overlap over the overlap at an edge that meets another tile
    (re-derived here in float64 from the tile boxes)."""
    probe = TileProbe()
    up = loader.Upscaler("spandrel", torch.nn.Linear(1, 1), 4, "probe", "test", torch.float32, descriptor=probe)
    h, w, tile, overlap, s = 48, 80, 32, 8, 4
    frames = clip(1, h, w, seed=9)
    got = stream.upscale_frames(up, frames, Opts(tile_size=tile, tile_overlap=overlap, channels_last=False))
    x = frames.permute(0, 3, 1, 2).double()
    ys = stream.tile_starts(h, tile, overlap)
    xs = stream.tile_starts(w, tile, overlap)
    assert len(ys) > 1 and len(xs) > 2  # seams in both directions

    def ramp(n, start_open, end_open):
        r = torch.ones(n, dtype=torch.float64)
        k = (torch.arange(overlap * s, dtype=torch.float64) + 0.5) / (overlap * s)
        if start_open:
            r[:overlap * s] = torch.minimum(r[:overlap * s], k)
        if end_open:
            r[-overlap * s:] = torch.minimum(r[-overlap * s:], k.flip(0))
        return r

    num = torch.zeros(1, 3, h * s, w * s, dtype=torch.float64)
    den = torch.zeros(1, 1, h * s, w * s, dtype=torch.float64)
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            o = probe(x[..., y0:y1, x0:x1]).double()
            wt = ramp((y1 - y0) * s, y0 > 0, y1 < h)[:, None] * ramp((x1 - x0) * s, x0 > 0, x1 < w)[None, :]
            num[..., y0 * s:y1 * s, x0 * s:x1 * s] += o * wt
            den[..., y0 * s:y1 * s, x0 * s:x1 * s] += wt
    want = (num / den).clamp(0, 1)[0].permute(1, 2, 0)
    torch.testing.assert_close(got[0].double(), want, rtol=0, atol=2e-6)
    untiled = stream.upscale_frames(up, frames, Opts(channels_last=False))
    assert (got - untiled).abs().max() > 0.02  # the tiles really ran and the probe shows it
