"""AnimeInterp: the released checkpoint layout, loading, and the clip runner (tiny widths, CPU)."""
import math
import os

import pytest
import torch

from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.interpolate import animeinterp as ai
from animevideo.pipelines.interpolate import loader, run, timing, tiny
from animevideo.pipelines.interpolate.timing import ClipAnalysis

# Every tensor of the released model (lisiyao21/AnimeInterp, models/AnimeInterp.py with RFR, GridNet),
# read from the released code: name and shape, after the checkpoint's 'module.' prefix is stripped.
OFFICIAL_KEYS = """
flownet.attention2.conv1.weight 32x6x5x5
flownet.attention2.conv1.bias 32
flownet.attention2.conv2.weight 32x32x3x3
flownet.attention2.conv2.bias 32
flownet.attention2.conv3.weight 1x38x3x3
flownet.attention2.conv3.bias 1
flownet.attention2.prelu1.weight 1
flownet.attention2.prelu2.weight 1
flownet.fnet.conv1.weight 64x3x7x7
flownet.fnet.conv1.bias 64
flownet.fnet.layer1.0.conv1.weight 64x64x3x3
flownet.fnet.layer1.0.conv1.bias 64
flownet.fnet.layer1.0.conv2.weight 64x64x3x3
flownet.fnet.layer1.0.conv2.bias 64
flownet.fnet.layer1.1.conv1.weight 64x64x3x3
flownet.fnet.layer1.1.conv1.bias 64
flownet.fnet.layer1.1.conv2.weight 64x64x3x3
flownet.fnet.layer1.1.conv2.bias 64
flownet.fnet.layer2.0.conv1.weight 96x64x3x3
flownet.fnet.layer2.0.conv1.bias 96
flownet.fnet.layer2.0.conv2.weight 96x96x3x3
flownet.fnet.layer2.0.conv2.bias 96
flownet.fnet.layer2.0.downsample.0.weight 96x64x1x1
flownet.fnet.layer2.0.downsample.0.bias 96
flownet.fnet.layer2.1.conv1.weight 96x96x3x3
flownet.fnet.layer2.1.conv1.bias 96
flownet.fnet.layer2.1.conv2.weight 96x96x3x3
flownet.fnet.layer2.1.conv2.bias 96
flownet.fnet.layer3.0.conv1.weight 128x96x3x3
flownet.fnet.layer3.0.conv1.bias 128
flownet.fnet.layer3.0.conv2.weight 128x128x3x3
flownet.fnet.layer3.0.conv2.bias 128
flownet.fnet.layer3.0.downsample.0.weight 128x96x1x1
flownet.fnet.layer3.0.downsample.0.bias 128
flownet.fnet.layer3.1.conv1.weight 128x128x3x3
flownet.fnet.layer3.1.conv1.bias 128
flownet.fnet.layer3.1.conv2.weight 128x128x3x3
flownet.fnet.layer3.1.conv2.bias 128
flownet.fnet.conv2.weight 256x128x1x1
flownet.fnet.conv2.bias 256
flownet.update_block.encoder.convc1.weight 256x324x1x1
flownet.update_block.encoder.convc1.bias 256
flownet.update_block.encoder.convc2.weight 192x256x3x3
flownet.update_block.encoder.convc2.bias 192
flownet.update_block.encoder.convf1.weight 128x2x7x7
flownet.update_block.encoder.convf1.bias 128
flownet.update_block.encoder.convf2.weight 64x128x3x3
flownet.update_block.encoder.convf2.bias 64
flownet.update_block.encoder.conv.weight 126x256x3x3
flownet.update_block.encoder.conv.bias 126
flownet.update_block.gru.convz1.weight 128x384x1x5
flownet.update_block.gru.convz1.bias 128
flownet.update_block.gru.convr1.weight 128x384x1x5
flownet.update_block.gru.convr1.bias 128
flownet.update_block.gru.convq1.weight 128x384x1x5
flownet.update_block.gru.convq1.bias 128
flownet.update_block.gru.convz2.weight 128x384x5x1
flownet.update_block.gru.convz2.bias 128
flownet.update_block.gru.convr2.weight 128x384x5x1
flownet.update_block.gru.convr2.bias 128
flownet.update_block.gru.convq2.weight 128x384x5x1
flownet.update_block.gru.convq2.bias 128
flownet.update_block.flow_head.conv1.weight 256x128x3x3
flownet.update_block.flow_head.conv1.bias 256
flownet.update_block.flow_head.conv2.weight 2x256x3x3
flownet.update_block.flow_head.conv2.bias 2
flownet.update_block.mask.0.weight 256x128x3x3
flownet.update_block.mask.0.bias 256
flownet.update_block.mask.2.weight 576x256x1x1
flownet.update_block.mask.2.bias 576
feat_ext.conv1.weight 32x3x3x3
feat_ext.conv1.bias 32
feat_ext.prelu1.weight 1
feat_ext.conv2.weight 32x32x3x3
feat_ext.conv2.bias 32
feat_ext.prelu2.weight 1
feat_ext.conv3.weight 64x32x3x3
feat_ext.conv3.bias 64
feat_ext.prelu3.weight 1
feat_ext.conv4.weight 64x64x3x3
feat_ext.conv4.bias 64
feat_ext.prelu4.weight 1
feat_ext.conv5.weight 96x64x3x3
feat_ext.conv5.bias 96
feat_ext.prelu5.weight 1
feat_ext.conv6.weight 96x96x3x3
feat_ext.conv6.bias 96
feat_ext.prelu6.weight 1
synnet.residual_model_head.0.weight 1
synnet.residual_model_head.1.weight 32x6x3x3
synnet.residual_model_head.1.bias 32
synnet.residual_model_head.2.weight 1
synnet.residual_model_head.3.weight 32x32x3x3
synnet.residual_model_head.3.bias 32
synnet.residual_model_head1.0.weight 1
synnet.residual_model_head1.1.weight 32x64x3x3
synnet.residual_model_head1.1.bias 32
synnet.residual_model_head1.2.weight 1
synnet.residual_model_head1.3.weight 32x32x3x3
synnet.residual_model_head1.3.bias 32
synnet.residual_model_head2.0.weight 1
synnet.residual_model_head2.1.weight 64x128x3x3
synnet.residual_model_head2.1.bias 64
synnet.residual_model_head2.2.weight 1
synnet.residual_model_head2.3.weight 64x64x3x3
synnet.residual_model_head2.3.bias 64
synnet.residual_model_head3.0.weight 1
synnet.residual_model_head3.1.weight 96x192x3x3
synnet.residual_model_head3.1.bias 96
synnet.residual_model_head3.2.weight 1
synnet.residual_model_head3.3.weight 96x96x3x3
synnet.residual_model_head3.3.bias 96
synnet.residual_model_01.0.weight 1
synnet.residual_model_01.1.weight 32x32x3x3
synnet.residual_model_01.1.bias 32
synnet.residual_model_01.2.weight 1
synnet.residual_model_01.3.weight 32x32x3x3
synnet.residual_model_01.3.bias 32
synnet.residual_model_04.0.weight 1
synnet.residual_model_04.1.weight 32x32x3x3
synnet.residual_model_04.1.bias 32
synnet.residual_model_04.2.weight 1
synnet.residual_model_04.3.weight 32x32x3x3
synnet.residual_model_04.3.bias 32
synnet.residual_model_05.0.weight 1
synnet.residual_model_05.1.weight 32x32x3x3
synnet.residual_model_05.1.bias 32
synnet.residual_model_05.2.weight 1
synnet.residual_model_05.3.weight 32x32x3x3
synnet.residual_model_05.3.bias 32
synnet.residual_model_tail.0.weight 1
synnet.residual_model_tail.1.weight 3x32x3x3
synnet.residual_model_tail.1.bias 3
synnet.residual_model_tail.2.weight 1
synnet.residual_model_tail.3.weight 3x3x3x3
synnet.residual_model_tail.3.bias 3
synnet.residual_model_11.0.weight 1
synnet.residual_model_11.1.weight 64x64x3x3
synnet.residual_model_11.1.bias 64
synnet.residual_model_11.2.weight 1
synnet.residual_model_11.3.weight 64x64x3x3
synnet.residual_model_11.3.bias 64
synnet.residual_model_14.0.weight 1
synnet.residual_model_14.1.weight 64x64x3x3
synnet.residual_model_14.1.bias 64
synnet.residual_model_14.2.weight 1
synnet.residual_model_14.3.weight 64x64x3x3
synnet.residual_model_14.3.bias 64
synnet.residual_model_15.0.weight 1
synnet.residual_model_15.1.weight 64x64x3x3
synnet.residual_model_15.1.bias 64
synnet.residual_model_15.2.weight 1
synnet.residual_model_15.3.weight 64x64x3x3
synnet.residual_model_15.3.bias 64
synnet.residual_model_21.0.weight 1
synnet.residual_model_21.1.weight 96x96x3x3
synnet.residual_model_21.1.bias 96
synnet.residual_model_21.2.weight 1
synnet.residual_model_21.3.weight 96x96x3x3
synnet.residual_model_21.3.bias 96
synnet.residual_model_24.0.weight 1
synnet.residual_model_24.1.weight 96x96x3x3
synnet.residual_model_24.1.bias 96
synnet.residual_model_24.2.weight 1
synnet.residual_model_24.3.weight 96x96x3x3
synnet.residual_model_24.3.bias 96
synnet.residual_model_25.0.weight 1
synnet.residual_model_25.1.weight 96x96x3x3
synnet.residual_model_25.1.bias 96
synnet.residual_model_25.2.weight 1
synnet.residual_model_25.3.weight 96x96x3x3
synnet.residual_model_25.3.bias 96
synnet.downsample_model_10.0.weight 1
synnet.downsample_model_10.1.weight 64x32x3x3
synnet.downsample_model_10.1.bias 64
synnet.downsample_model_10.2.weight 1
synnet.downsample_model_10.3.weight 64x64x3x3
synnet.downsample_model_10.3.bias 64
synnet.downsample_model_20.0.weight 1
synnet.downsample_model_20.1.weight 96x64x3x3
synnet.downsample_model_20.1.bias 96
synnet.downsample_model_20.2.weight 1
synnet.downsample_model_20.3.weight 96x96x3x3
synnet.downsample_model_20.3.bias 96
synnet.downsample_model_11.0.weight 1
synnet.downsample_model_11.1.weight 64x32x3x3
synnet.downsample_model_11.1.bias 64
synnet.downsample_model_11.2.weight 1
synnet.downsample_model_11.3.weight 64x64x3x3
synnet.downsample_model_11.3.bias 64
synnet.downsample_model_21.0.weight 1
synnet.downsample_model_21.1.weight 96x64x3x3
synnet.downsample_model_21.1.bias 96
synnet.downsample_model_21.2.weight 1
synnet.downsample_model_21.3.weight 96x96x3x3
synnet.downsample_model_21.3.bias 96
synnet.upsample_model_04.1.weight 1
synnet.upsample_model_04.2.weight 32x64x3x3
synnet.upsample_model_04.2.bias 32
synnet.upsample_model_04.3.weight 1
synnet.upsample_model_04.4.weight 32x32x3x3
synnet.upsample_model_04.4.bias 32
synnet.upsample_model_14.1.weight 1
synnet.upsample_model_14.2.weight 64x96x3x3
synnet.upsample_model_14.2.bias 64
synnet.upsample_model_14.3.weight 1
synnet.upsample_model_14.4.weight 64x64x3x3
synnet.upsample_model_14.4.bias 64
synnet.upsample_model_05.1.weight 1
synnet.upsample_model_05.2.weight 32x64x3x3
synnet.upsample_model_05.2.bias 32
synnet.upsample_model_05.3.weight 1
synnet.upsample_model_05.4.weight 32x32x3x3
synnet.upsample_model_05.4.bias 32
synnet.upsample_model_15.1.weight 1
synnet.upsample_model_15.2.weight 64x96x3x3
synnet.upsample_model_15.2.bias 64
synnet.upsample_model_15.3.weight 1
synnet.upsample_model_15.4.weight 64x64x3x3
synnet.upsample_model_15.4.bias 64
"""


def official_table():
    rows = [line.split() for line in OFFICIAL_KEYS.strip().splitlines()]
    return {k: tuple(int(x) for x in s.split("x")) for k, s in rows}


@pytest.fixture(scope="module")
def tiny_model():
    return tiny.build_tiny_interpolator(0)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    assert tiny.write_tiny_interpolator(str(d)) == ["interpolation/anime_interp_full.ckpt"]
    return os.path.join(str(d), "interpolation", "anime_interp_full.ckpt")


def test_state_dict_names_and_shapes_are_the_released_ones():
    with torch.device("meta"):
        model = ai.AnimeInterp()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_table()
    counts = {}
    for k, v in model.state_dict().items():
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + v.numel()
    # the parameter counts of the released parts: 4.20 M, 0.20 M, 1.80 M
    assert counts == {"flownet": 4_202_233, "feat_ext": 204_006, "synnet": 1_802_467}


def test_released_widths_are_read_back_from_shapes():
    with torch.device("meta"):
        sd = ai.AnimeInterp().state_dict()
    assert loader.config_from_state_dict(sd) == ai.AnimeInterpConfig()
    assert ai.AnimeInterpConfig().min_size == 128


def test_tiny_checkpoint_is_in_the_released_layout_and_strict_loads(tiny_ckpt):
    raw = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert list(raw) == ["model_state_dict"]
    sd = raw["model_state_dict"]
    assert sd and all(k.startswith("module.") for k in sd)
    stripped = {k[len("module."):]: v for k, v in sd.items()}
    # the same names as the released model, smaller widths
    assert set(stripped) == set(official_table())
    model = loader.load_interpolator(tiny_ckpt)
    assert model.cfg == tiny.TINY_CONFIG
    assert model.load_state_dict(stripped, strict=True) is not None  # no missing / unexpected keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, stripped[k]), k
    assert not any(p.requires_grad for p in model.parameters())


def test_non_interpolator_files_get_a_message_naming_what_they_hold(tmp_path):
    from safetensors.torch import save_file

    svd = tmp_path / "svd_like.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(2)}, str(svd))
    with pytest.raises(AnimeVideoModelError) as e:
        loader.load_interpolator(str(svd))
    msg = str(e.value)
    assert "not an AnimeInterp checkpoint" in msg and "model.*" in msg and "Stable Diffusion" in msg
    assert "anime_interp_full.ckpt" in msg

    rife = tmp_path / "flownet.pkl.pth"
    torch.save({"module.block0.conv0.0.0.weight": torch.zeros(1)}, str(rife))
    with pytest.raises(AnimeVideoModelError, match="RIFE"):
        loader.load_interpolator(str(rife))

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(AnimeVideoModelError):  # checkpoint_io's refusal, whatever the reason it gives
        loader.load_interpolator(str(junk))


def test_incomplete_or_misshaped_animeinterp_is_named(tiny_model):
    sd = dict(tiny_model.state_dict())
    del sd["synnet.residual_model_tail.3.weight"]
    with pytest.raises(AnimeVideoModelError, match="residual_model_tail.3.weight"):
        loader.model_from_state_dict(sd, "x.ckpt")
    sd = dict(tiny_model.state_dict())
    sd["feat_ext.conv2.weight"] = torch.zeros(8, 8, 5, 5)
    with pytest.raises(AnimeVideoModelError, match="wrong shape.*feat_ext.conv2.weight"):
        loader.model_from_state_dict(sd, "x.ckpt")


def clip_of(n, h=128, w=128, seed=0):
    """A square moving right 5 px per frame over a smooth background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = []
    for i in range(n):
        img = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], dim=-1)
        y0, x0 = h // 3, 10 + 5 * i
        img[y0:y0 + 20, x0:x0 + 20] = torch.tensor([0.95, 0.3, 0.1])
        frames.append(img + 0.01 * torch.rand(h, w, 3, generator=g))
    return torch.stack(frames).clamp(0, 1)


def test_runner_matches_the_released_style_call_and_copies_drawing_times(tiny_model):
    clip = clip_of(3)
    plan = timing.plan_retiming(ClipAnalysis(3, [0, 1, 2]), 24, 96)
    out, stats = run.interpolate_clip(tiny_model, clip, plan)
    ref = run.plain_loop(tiny_model, clip, plan)
    assert out.shape == (12, 128, 128, 3) and out.dtype == torch.float32
    assert (out - ref).abs().max() < 1e-5
    assert torch.equal(out[0::4][:3], clip)  # t = 0 at every source frame: the input itself
    assert stats.pairs == 2 and stats.encoded == 3 and stats.interpolated == 6
    mid = out[2]  # half way between frames 0 and 1: differs from both
    assert torch.isfinite(out).all() and not torch.equal(mid, clip[0]) and not torch.equal(mid, clip[1])


def test_warp_at_t0_and_t1_returns_the_inputs(tiny_model):
    clip = clip_of(2)
    a = tiny_model.encode_frame(clip[0].permute(2, 0, 1)[None])
    b = tiny_model.encode_frame(clip[1].permute(2, 0, 1)[None])
    f12, f21 = tiny_model.pair_flows(a, b)
    assert f12.abs().max() > 0
    i1, _ = tiny_model.warp_to(a, b, f12, f21, 0.0)
    _, i2 = tiny_model.warp_to(a, b, f12, f21, 1.0)
    assert torch.equal(i1, a.image) and torch.equal(i2, b.image)


@pytest.mark.parametrize("h,w", [(67, 129), (16, 16), (135, 128)])
def test_odd_and_small_sizes_are_padded_and_cropped_back(tiny_model, h, w):
    clip = clip_of(2, h, w)
    plan = timing.plan_retiming(ClipAnalysis(2, [0, 1]), 24, 48)
    out, stats = run.interpolate_clip(tiny_model, clip, plan)
    assert out.shape == (4, h, w, 3) and torch.isfinite(out).all()
    ph, pw = stats.padded_to
    assert ph % 8 == 0 and pw % 8 == 0 and min(ph, pw) >= 128 and ph >= h and pw >= w
    assert (out - run.plain_loop(tiny_model, clip, plan)).abs().max() < 1e-5


def test_model_refuses_unpadded_sizes(tiny_model):
    with pytest.raises(ValueError, match="at least 128"):
        tiny_model.encode_frame(torch.rand(1, 3, 64, 128))
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_model.encode_frame(torch.rand(1, 3, 130, 128))


def test_runner_keeps_only_the_current_pair_and_can_be_interrupted(tiny_model, monkeypatch):
    clip = clip_of(4)
    plan = timing.plan_retiming(ClipAnalysis(4, [0, 1, 2, 3]), 24, 48)
    live = []
    real = tiny_model.encode_frame

    def counting(x):
        live.append(1)
        return real(x)

    monkeypatch.setattr(tiny_model, "encode_frame", counting)
    seen = []
    out, stats = run.interpolate_clip(tiny_model, clip, plan, on_frame=lambda d, t, f=None: seen.append(d))
    assert len(live) == 4 and stats.encoded == 4  # each frame encoded once
    assert seen == list(range(1, len(plan) + 1))

    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        run.interpolate_clip(tiny_model, clip, plan, check_interrupt=interrupt)


def test_initial_flow_is_optional_and_zero_equals_none(tiny_model):
    clip = clip_of(2).permute(0, 3, 1, 2)
    i1, i2 = clip[:1], clip[1:]
    none = tiny_model(i1, i2, None, None, 0.5)
    zero = tiny_model(i1, i2, torch.zeros(1, 2, 128, 128), torch.zeros(1, 2, 128, 128), 0.5)
    assert (none[0] - zero[0]).abs().max() < 1e-6
    init = torch.full((1, 2, 128, 128), 3.0)
    assert (tiny_model(i1, i2, init, -init, 0.5)[1] - none[1]).abs().max() > 1e-3


def test_bf16_weights_keep_float32_flows_and_stay_close(tiny_ckpt):
    fp32 = loader.load_interpolator(tiny_ckpt, torch.float32)
    bf16 = loader.load_interpolator(tiny_ckpt, loader.resolve_dtype("bf16"))
    assert bf16.dtype == torch.bfloat16
    clip = clip_of(2)
    a = bf16.encode_frame(clip[0].permute(2, 0, 1)[None])
    b = bf16.encode_frame(clip[1].permute(2, 0, 1)[None])
    f12, _ = bf16.pair_flows(a, b)
    assert f12.dtype == torch.float32
    plan = timing.plan_retiming(ClipAnalysis(2, [0, 1]), 24, 48)
    out16, _ = run.interpolate_clip(bf16, clip, plan)
    out32, _ = run.interpolate_clip(fp32, clip, plan)
    assert out16.dtype == torch.float32 and (out16 - out32).abs().max() < 0.1


def test_flow_directions_batched_or_in_turn_agree(tiny_model):
    clip = clip_of(2)
    a = tiny_model.encode_frame(clip[0].permute(2, 0, 1)[None])
    b = tiny_model.encode_frame(clip[1].permute(2, 0, 1)[None])
    init = torch.full((1, 2, 128, 128), 1.5)
    for kw in ({}, {"init12": init}):
        seq = tiny_model.pair_flows(a, b, batch_directions=False, **kw)
        bat = tiny_model.pair_flows(a, b, batch_directions=True, **kw)
        assert all((x - y).abs().max() < 1e-5 for x, y in zip(seq, bat))


# ---------------------------------------------------------------------------------------------
# mechanisms against float64 re-derivations of their equations (RAFT / AnimeInterp)
# ---------------------------------------------------------------------------------------------

def test_correlation_volume_matches_float64():
    """C(i, j) = <f1_i, f2_j> / sqrt(d) (RAFT's all-pairs correlation, as the released RFR computes it)."""
    g = torch.Generator().manual_seed(0)
    d, h, w = 64, 3, 5
    f1, f2 = torch.randn(2, d, h, w, generator=g), torch.randn(2, d, h, w, generator=g)
    vol = ai.correlation_volume(f1, f2)
    ref = torch.einsum("bdi,bdj->bij", f1.double().flatten(2), f2.double().flatten(2)) / d ** 0.5
    assert vol.shape == (2, h * w, h * w)
    torch.testing.assert_close(vol.double(), ref, rtol=1e-6, atol=1e-6)
    for (i, j) in ((0, 0), (4, 11), (14, 7)):  # spot entries written out
        yi, xi, yj, xj = i // w, i % w, j // w, j % w
        dot = sum(float(f1[1, c, yi, xi]) * float(f2[1, c, yj, xj]) for c in range(d))
        assert abs(float(vol[1, i, j]) - dot / 8.0) < 1e-5


def _bilinear64(img, x, y):
    """Zero-padded bilinear sample of a [H, W] float64 map at (x, y) pixels."""
    hh, ww = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        if 0 <= cx < ww and 0 <= cy < hh:
            total += float(img[cy, cx]) * (1 - abs(x - cx)) * (1 - abs(y - cy))
    return total


def test_correlation_pyramid_lookup_matches_float64():
    """Level l = the volume average-pooled 2^l times over the target pixels; the lookup samples a (2r+1)^2 window
    around coords / 2^l, x offset along the first window axis (RAFT's order, which convc1 was trained on)."""
    g = torch.Generator().manual_seed(1)
    d, h, w, levels, r = 8, 8, 8, 2, 1
    f1, f2 = torch.randn(1, d, h, w, generator=g), torch.randn(1, d, h, w, generator=g)
    pyr = ai.CorrPyramid(f1, f2, levels, r)
    coords = ai.coords_grid(1, h, w, "cpu") + torch.randn(1, 2, h, w, generator=g) * 1.5
    out = pyr.lookup(coords)
    assert out.shape == (1, levels * (2 * r + 1) ** 2, h, w)
    vol = torch.einsum("di,dj->ij", f1[0].double().flatten(1), f2[0].double().flatten(1)) / math.sqrt(d)
    for (py, px) in ((0, 0), (3, 5), (7, 2)):
        src = py * w + px
        maps = [vol[src].view(h, w)]
        for _ in range(levels - 1):
            m = maps[-1]
            maps.append(m.view(m.shape[0] // 2, 2, m.shape[1] // 2, 2).mean(dim=(1, 3)))
        cx, cy = float(coords[0, 0, py, px]), float(coords[0, 1, py, px])
        k = 0
        for lvl, m in enumerate(maps):
            for ox in range(-r, r + 1):  # first window axis: x offset
                for oy in range(-r, r + 1):
                    want = _bilinear64(m, cx / 2 ** lvl + ox, cy / 2 ** lvl + oy)
                    assert abs(float(out[0, k, py, px]) - want) < 1e-4, (py, px, lvl, ox, oy)
                    k += 1


def test_convex_upsample_matches_float64():
    """Each fine pixel (8y+i, 8x+j) = sum over the 3x3 coarse neighbours k of softmax_k(mask[k, i, j]) * 8 flow."""
    g = torch.Generator().manual_seed(2)
    h, w = 3, 4
    flow = torch.randn(1, 2, h, w, generator=g)
    mask = torch.randn(1, 9 * 64, h, w, generator=g)
    up = ai.convex_upsample(flow, mask)
    assert up.shape == (1, 2, 8 * h, 8 * w)
    f = torch.nn.functional.pad(flow.double(), (1, 1, 1, 1))  # zero outside, as unfold pads
    m = mask.double().view(9, 8, 8, h, w)
    for (y, x, i, j) in ((0, 0, 0, 0), (1, 2, 3, 5), (2, 3, 7, 7), (2, 0, 4, 1)):
        wk = torch.softmax(m[:, i, j, y, x], dim=0)
        want = sum(wk[k] * 8 * f[0, :, y + k // 3, x + k % 3] for k in range(9))
        torch.testing.assert_close(up[0, :, 8 * y + i, 8 * x + j].double(), want, rtol=1e-5, atol=1e-5)


def test_flow_refinement_loop_matches_its_float64_rederivation(tiny_model):
    """RFR: coords1 = coords0 + 2 * init (the released double add); each iteration looks the correlation up at
    coords1, the update block gives a delta, coords1 += delta; the flow is convex-upsampled at the end. Re-run
    by hand in float64 with float64 copies of the trained parts."""
    import copy

    g = torch.Generator().manual_seed(3)
    rfr = tiny_model.flownet
    b, h, w = 1, 16, 16  # the coarsest of 4 levels must keep 2 px
    d = rfr.cfg.feature_dim
    fmap1, fmap2 = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
    init = torch.randn(b, 2, h, w, generator=g) * 0.5
    iters = 3
    out = rfr.refine(fmap1, fmap2, fmap1, iters, init)
    update = copy.deepcopy(rfr.update_block).double()
    pyr = ai.CorrPyramid(fmap1.double(), fmap2.double(), rfr.cfg.corr_levels, rfr.cfg.corr_radius)
    pyr.pyramid = [torch.einsum("di,dj->ij", fmap1[0].double().flatten(1), fmap2[0].double().flatten(1))
                   .div(math.sqrt(d)).reshape(h * w, 1, h, w)]
    for _ in range(rfr.cfg.corr_levels - 1):
        pyr.pyramid.append(torch.nn.functional.avg_pool2d(pyr.pyramid[-1], 2, stride=2))
    net, inp = torch.split(fmap1.double(), [rfr.hidden_dim, rfr.context_dim], dim=1)
    net, inp = torch.tanh(net), torch.relu(inp)
    coords0 = ai.coords_grid(b, h, w, "cpu").double()
    coords1 = coords0 + 2 * init.double()
    deltas = []
    for _ in range(iters):
        net, delta = update(net, inp, pyr.lookup(coords1), coords1 - coords0)
        coords1 = coords1 + delta
        deltas.append(delta)
    want = ai.convex_upsample(coords1 - coords0, update.upsample_mask(net))
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)
    assert all(dl.abs().max() > 1e-3 for dl in deltas)  # every iteration moves the flow
    # the initial flow counts twice, so it shows in the result
    assert (rfr.refine(fmap1, fmap2, fmap1, iters, None) - out).abs().max() > 1e-2


def test_synthesis_matches_its_float64_composition(tiny_model):
    """The frame at t: images and the 3 feature levels of both frames forward-splatted by t*F12 and (1-t)*F21
    (summation splat normalised by the splatted ones, in float64), then GridNet on
    [frame-1 part, frame-2 part] per level."""
    import copy

    from animevideo.pipelines.interpolate.softsplat import splat_normalized

    g = torch.Generator().manual_seed(4)
    size = tiny_model.min_size
    a_img, b_img = torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)
    a, b = tiny_model.encode_frame(a_img), tiny_model.encode_frame(b_img)
    f12 = torch.randn(1, 2, size, size, generator=g) * 2
    f21 = torch.randn(1, 2, size, size, generator=g) * 2
    t = 0.3
    out = tiny_model.synthesize(a, b, f12, f21, t)

    def splat64(x, flow):  # the splat itself is checked against a float64 loop in test_interp_softsplat.py
        return splat_normalized(x.double(), flow.double())[0]

    def resize64(flow, hw):
        return ai.resize_flow(flow.double(), hw)

    parts = []
    for img, feats, flow in ((a_img, a.feats, t * f12), (b_img, b.feats, (1 - t) * f21)):
        parts.append([splat64(img.double(), flow.double())]
                     + [splat64(f.double(), resize64(flow, f.shape[-2:])) for f in feats])
    syn = copy.deepcopy(tiny_model.synnet).double()
    want = syn(*[torch.cat([p1, p2], dim=1) for p1, p2 in zip(*parts)])
    torch.testing.assert_close(out.double(), want, rtol=1e-3, atol=1e-4)
    # and t matters: the other time gives another frame
    assert (tiny_model.synthesize(a, b, f12, f21, 0.7) - out).abs().max() > 1e-3
