"""AnimeSR (MSRSWVSR): official parameter names, strict loading, the cell against an independent functional
reference, border handling, unclamped feedback, and detection (spandrel refuses the file, our loader takes it)."""
import os

import pytest
import torch
import torch.nn.functional as F

from animevideo.pipelines.errors import AnimeVideoModelError
from animevideo.pipelines.upscale import animesr, loader, stream, tiny

P = "recurrent_cell."


def official_key_shapes(num_feat: int, num_block, netscale: int = 4) -> dict[str, tuple]:
    """Key names and shapes of the official ``MSRSWVSR(num_feat, num_block, netscale).state_dict()``, written out
    from TencentARC/AnimeSR ``animesr/archs/vsr_arch.py`` (RightAlignMSConvResidualBlocks with BasicSR's
    ResidualBlockNoBN: conv1, conv2)."""
    f, sr = num_feat, 3 * netscale * netscale
    out = f + sr
    shapes = {
        "conv_s1_first.0": (f, 9 + sr + f),
        "conv_s2_first.0": (f, f),
        "conv_s4_first.0": (f, f),
    }
    for s, n in zip((1, 2, 4), num_block):
        for i in range(n):
            for c in ("conv1", "conv2"):
                shapes[f"body_s{s}_first.{i}.{c}"] = (f, f)
    shapes["fusion.0"] = (2 * out, 3 * f)
    shapes["fusion.2"] = (out, 2 * out)
    keys = {}
    for name, (co, ci) in shapes.items():
        keys[f"{P}{name}.weight"] = (co, ci, 3, 3)
        keys[f"{P}{name}.bias"] = (co,)
    return keys


def random_official_state_dict(num_feat, num_block, netscale=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(s, generator=g) - 0.5) * (0.2 if k.endswith("weight") else 0.02)
            for k, s in official_key_shapes(num_feat, num_block, netscale).items()}


@pytest.mark.parametrize("cfg", [dict(num_feat=64, num_block=(5, 3, 2), netscale=4),
                                 dict(num_feat=8, num_block=(2, 1, 1), netscale=4),
                                 dict(num_feat=12, num_block=(3, 3, 0), netscale=2)])
def test_state_dict_keys_and_shapes_equal_the_official_ones(cfg):
    with torch.device("meta"):
        model = animesr.MSRSWVSR(**cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_key_shapes(cfg["num_feat"], cfg["num_block"], cfg["netscale"])


def test_released_size_has_the_released_parameter_count():
    with torch.device("meta"):
        model = animesr.MSRSWVSR(**tiny.REAL_ANIMESR)
    assert sum(p.numel() for p in model.parameters()) == 1_495_376  # AnimeSR_v2.pth: 5,996,559 B of fp32
    assert len(model.state_dict()) == 50


@pytest.mark.parametrize("cfg", [dict(num_feat=8, num_block=(2, 1, 1), netscale=4),
                                 dict(num_feat=6, num_block=(3, 2, 2), netscale=4),
                                 dict(num_feat=4, num_block=(2, 2, 0), netscale=2)])
def test_strict_load_of_official_names_infers_the_config(cfg):
    sd = random_official_state_dict(**cfg)
    model = animesr.build_from_state_dict(dict(sd))
    assert model.config == animesr.AnimeSRConfig(cfg["num_feat"], cfg["num_block"], cfg["netscale"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_strict_load_refuses_missing_and_unexpected_keys():
    sd = random_official_state_dict(8, (2, 1, 1))
    broken = dict(sd)
    del broken[f"{P}body_s2_first.0.conv2.bias"]
    with pytest.raises(AnimeVideoModelError, match="conv2.bias"):
        animesr.build_from_state_dict(broken)
    extra = dict(sd)
    extra[f"{P}fusion.1.weight"] = torch.zeros(1)
    with pytest.raises(AnimeVideoModelError, match="fusion.1.weight"):
        animesr.build_from_state_dict(extra)
    wrong = dict(sd)
    wrong[f"{P}fusion.2.weight"] = torch.zeros(50, 112, 3, 3)
    with pytest.raises(AnimeVideoModelError, match="inconsistent"):
        animesr.build_from_state_dict(wrong)


# ---------------------------------------------------------------------------------------------
# The cell against a functional reference written from the official code
# ---------------------------------------------------------------------------------------------

def basicsr_pixel_unshuffle(x, scale):
    b, c, hh, hw = x.shape
    h, w = hh // scale, hw // scale
    return x.view(b, c, h, scale, w, scale).permute(0, 1, 3, 5, 2, 4).reshape(b, c * scale * scale, h, w)


def ref_cell(sd, window, fb, state, nb, s):
    def conv(x, name, stride=1):
        return F.conv2d(x, sd[f"{P}{name}.weight"], sd[f"{P}{name}.bias"], stride, 1)

    def lrelu(x):
        return F.leaky_relu(x, 0.1)

    def block(x, name):
        return x + conv(F.relu(conv(x, f"{name}.conv1")), f"{name}.conv2")

    def up(x, f):
        return F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)

    x = torch.cat((window, basicsr_pixel_unshuffle(fb, s), state), 1)
    x1 = lrelu(conv(x, "conv_s1_first.0"))
    x2 = lrelu(conv(x1, "conv_s2_first.0", 2))
    x4 = lrelu(conv(x2, "conv_s4_first.0", 2))
    f2 = f4 = False
    for i in range(nb[0]):
        x1 = block(x1 + (up(x2, 2) if f2 else 0) + (up(x4, 4) if f4 else 0), f"body_s1_first.{i}")
        if i >= nb[0] - nb[1]:
            x2 = block(x2 + (up(x4, 2) if f4 else 0), f"body_s2_first.{i - nb[0] + nb[1]}")
            f2 = True
        if i >= nb[0] - nb[2]:
            x4 = block(x4, f"body_s4_first.{i - nb[0] + nb[2]}")
            f4 = True
    out = conv(lrelu(conv(torch.cat((x1, up(x2, 2), up(x4, 4)), 1), "fusion.0")), "fusion.2")
    c = 3 * s * s
    return F.pixel_shuffle(out[:, :c], s) + up(window[:, 3:6], s), lrelu(out[:, c:])


def test_torch_pixel_unshuffle_is_basicsrs():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    assert torch.equal(F.pixel_unshuffle(x, 4), basicsr_pixel_unshuffle(x, 4))


@pytest.mark.parametrize("nb", [(2, 1, 1), (3, 2, 1), (2, 2, 0)])
def test_cell_matches_the_functional_reference(nb):
    sd = random_official_state_dict(8, nb, seed=3)
    model = animesr.build_from_state_dict(dict(sd))
    g = torch.Generator().manual_seed(1)
    window, fb, state = torch.rand(1, 9, 16, 20, generator=g), torch.rand(1, 3, 64, 80, generator=g), \
        torch.rand(1, 8, 16, 20, generator=g)
    with torch.no_grad():
        ours = model.cell(window, fb, state)
        ref = ref_cell(sd, window, fb, state, nb, 4)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_forward_reuses_border_frames_and_starts_from_zeros():
    model = tiny.build_tiny_animesr(0)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 4, 3, 8, 12, generator=g)
    with torch.no_grad():
        got = model(x)
        sr, st = torch.zeros(1, 3, 32, 48), torch.zeros(1, 8, 8, 12)
        for i, (p, c, n) in enumerate([(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 3)]):
            sr, st = model.cell(torch.cat((x[:, p], x[:, c], x[:, n]), 1), sr, st)
            assert torch.equal(got[:, i], sr)
        one = model(x[:, :1])
        sr1, _ = model.cell(torch.cat((x[:, 0],) * 3, 1), torch.zeros(1, 3, 32, 48), torch.zeros(1, 8, 8, 12))
    assert one.shape == (1, 1, 3, 32, 48) and torch.equal(one[:, 0], sr1)


def test_runner_feeds_back_the_unclamped_output():
    model = tiny.build_tiny_animesr(0)
    with torch.no_grad():
        model.recurrent_cell.fusion[2].weight.mul_(40)  # outputs well outside 0..1
    up = loader.Upscaler("animesr", model, 4, "AnimeSR", "t", torch.float32, size_multiple=4)
    g = torch.Generator().manual_seed(5)
    frames = torch.rand(4, 8, 8, 3, generator=g)
    clip = frames.permute(0, 3, 1, 2)[None].contiguous()
    with torch.no_grad():
        raw = model(clip)[0]
        assert (raw < 0).any() and (raw > 1).any()
        # the official CPU script's variant: clamp the fed-back frame
        sr, st = model.initial_state(clip[:, 0])
        clamped = []
        for i in range(4):
            w = torch.cat((clip[:, max(i - 1, 0)], clip[:, i], clip[:, min(i + 1, 3)]), 1)
            sr, st = model.cell(w, sr, st)
            sr = sr.clamp(0, 1)
            clamped.append(sr[0])
    ours = stream.upscale_frames(up, frames, stream.StreamOptions(chunk_size=2, channels_last=False))
    assert torch.equal(ours, raw.clamp(0, 1).permute(0, 2, 3, 1))
    assert not torch.equal(ours, torch.stack(clamped).permute(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------
# Files: spandrel refuses AnimeSR, our loader detects it
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models"))
    written = tiny.write_tiny_upscalers(d)
    assert written == ["upscale_models/AnimeSR_v2.pth", "upscale_models/realesr-animevideov3.pth",
                       "upscale_models/RealESRGAN_x4plus_anime_6B.pth"]
    return d


def test_tiny_animesr_file_is_a_raw_state_dict_with_official_names(tiny_dir):
    obj = torch.load(os.path.join(tiny_dir, tiny.ANIMESR_FILE), weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in obj.items()}
    assert shapes == official_key_shapes(8, (2, 1, 1))


def test_spandrel_refuses_our_animesr_file_and_our_loader_accepts_it(tiny_dir):
    import spandrel

    path = os.path.join(tiny_dir, tiny.ANIMESR_FILE)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_file(path)
    up = loader.load_upscaler(path)
    assert up.kind == "animesr" and up.recurrent and up.scale == 4 and up.arch_name == "AnimeSR"
    assert up.details == {"num_feat": 8, "num_block": (2, 1, 1)}
    assert isinstance(up.model, animesr.MSRSWVSR) and up.dtype == torch.float32
    assert not any(p.requires_grad for p in up.model.parameters())


def test_loader_strips_a_module_prefix_and_unwraps_params(tmp_path):
    sd = random_official_state_dict(8, (2, 1, 1))
    path = str(tmp_path / "net_g_latest.pth")
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, path)
    up = loader.load_upscaler(path)
    assert up.kind == "animesr"
    assert torch.equal(up.model.recurrent_cell.fusion[2].weight, sd[f"{P}fusion.2.weight"])
