"""The informative-drawings lineart generator (LVCD's sketch extractor): layout, parity, hints, polarity."""
import os

import pytest
import torch
import torch.nn.functional as F

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.lineart import extract, loader, model as gen, tiny

# The released sk_model.pth / sk_model2.pth layout (ControlNet-1.1 annotator/lineart, Generator(3, 1, 3)).
RELEASED_SHAPES = {
    "model0.1.weight": (64, 3, 7, 7), "model0.1.bias": (64,),
    "model1.0.weight": (128, 64, 3, 3), "model1.0.bias": (128,),
    "model1.3.weight": (256, 128, 3, 3), "model1.3.bias": (256,),
    **{f"model2.{b}.conv_block.{i}.{p}": ((256, 256, 3, 3) if p == "weight" else (256,))
       for b in range(3) for i in (1, 5) for p in ("weight", "bias")},
    "model3.0.weight": (256, 128, 3, 3), "model3.0.bias": (128,),  # ConvTranspose2d: [in, out, k, k]
    "model3.3.weight": (128, 64, 3, 3), "model3.3.bias": (64,),
    "model4.1.weight": (1, 64, 7, 7), "model4.1.bias": (1,),
}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models"))
    assert tiny.write_tiny_lineart(d, seed=3) == ["lineart/sk_model.pth"]
    return os.path.join(d, "lineart", "sk_model.pth")


@pytest.fixture(scope="module")
def tiny_model(tiny_file):
    return loader.load_lineart_model(tiny_file)


# ---------------------------------------------------------------------------------------------
# An independent reference in float64: plain functional ops on the state dict, no nn.Module.
# ---------------------------------------------------------------------------------------------

def _inorm(x):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def reference_generator(sd, x):
    """Chan et al. 2022's generator, written from the paper/annotator description with functional ops."""
    w = {k: v.double() for k, v in sd.items()}
    h = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), w["model0.1.weight"], w["model0.1.bias"])
    h = F.relu(_inorm(h))
    for i in (0, 3):
        h = F.relu(_inorm(F.conv2d(h, w[f"model1.{i}.weight"], w[f"model1.{i}.bias"], stride=2, padding=1)))
    b = 0
    while f"model2.{b}.conv_block.1.weight" in w:
        r = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), w[f"model2.{b}.conv_block.1.weight"],
                     w[f"model2.{b}.conv_block.1.bias"])
        r = F.relu(_inorm(r))
        r = F.conv2d(F.pad(r, (1, 1, 1, 1), mode="reflect"), w[f"model2.{b}.conv_block.5.weight"],
                     w[f"model2.{b}.conv_block.5.bias"])
        h = h + _inorm(r)
        b += 1
    for i in (0, 3):
        h = F.conv_transpose2d(h, w[f"model3.{i}.weight"], w[f"model3.{i}.bias"], stride=2, padding=1,
                               output_padding=1)
        h = F.relu(_inorm(h))
    h = F.conv2d(F.pad(h, (3, 3, 3, 3), mode="reflect"), w["model4.1.weight"], w["model4.1.bias"])
    return torch.sigmoid(h)


def reference_annotator_hint(sd, rgb_uint8):
    """LVCD's path: annotator(uint8 HWC RGB) -> uint8 line (truncated) -> 1 - skt/255, 3 channels. [H,W,3]."""
    x = rgb_uint8.double().div(255.0).permute(2, 0, 1)[None]
    line = reference_generator(sd, x)[0, 0]
    skt = (line * 255.0).clamp(0, 255).to(torch.uint8)  # numpy astype(uint8) truncates, as does this
    return (1.0 - skt.double() / 255.0)[..., None].repeat(1, 1, 3)


# ---------------------------------------------------------------------------------------------
# Layout and loading
# ---------------------------------------------------------------------------------------------

def test_the_released_layout_has_the_released_names_and_shapes():
    sd = gen.LineartGenerator().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == RELEASED_SHAPES
    assert sum(v.numel() for v in sd.values()) == 4_290_945  # 17.2 MB in fp32, the size of sk_model.pth
    assert gen.config_from_state_dict(sd) == gen.RELEASED
    meta = {k: torch.empty(s, device="meta") for k, s in RELEASED_SHAPES.items()}
    assert gen.config_from_state_dict(meta) == gen.GeneratorConfig(3, 1, 3, 64, 2)


def test_tiny_file_is_a_raw_state_dict_in_the_released_layout_and_loads_strictly(tiny_file, tiny_model):
    raw = torch.load(tiny_file, map_location="cpu", weights_only=True)
    assert isinstance(raw, dict) and set(raw) == set(RELEASED_SHAPES)  # same names, no wrapper
    for k, v in raw.items():
        assert v.ndim == len(RELEASED_SHAPES[k])
    assert tiny_model.config == tiny.TINY_CONFIG
    assert tiny_model.source == "sk_model.pth" and not tiny_model.training
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, raw[k], rtol=0, atol=0)
    # the same model from a .safetensors copy
    from safetensors.torch import save_file

    st = tiny_file.replace(".pth", ".safetensors")
    save_file(raw, st)
    again = loader.load_lineart_model(st)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(again(x), tiny_model(x), rtol=0, atol=0)


def test_sizes_come_from_shapes():
    cfg = gen.GeneratorConfig(input_nc=3, output_nc=1, n_residual_blocks=5, base=6, n_down=3)
    m = tiny.build_tiny_lineart(1, cfg)
    assert gen.config_from_state_dict(m.state_dict()) == cfg
    assert cfg.size_multiple == 8 and cfg.min_side == 16
    out = extract.line_map(m, torch.rand(1, 3, 20, 13))
    assert out.shape == (1, 1, 20, 13)


def _save(path, sd):
    torch.save(sd, path)
    return str(path)


def test_wrong_files_give_clear_errors(tmp_path, tiny_file):
    cases = {
        "classifier.pth": ({"head.weight": torch.zeros(2, 2)}, ["classifier.pth", "unknown model", "head.weight",
                                                                 "sk_model.pth", "lllyasviel/Annotators"]),
        "netG.pth": ({"model.model.0.weight": torch.zeros(64, 3, 4, 4)}, ["lineart_anime", "sk_model.pth"]),
        "svd.pth": ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, ["Stable Diffusion"]),
    }
    for name, (sd, parts) in cases.items():
        with pytest.raises(AnimeVideoModelError) as e:
            loader.load_lineart_model(_save(tmp_path / name, sd))
        for part in parts:
            assert part in str(e.value), (name, str(e.value))
    sd = torch.load(tiny_file, weights_only=True)
    # a layer short
    broken = {k: v for k, v in sd.items() if k != "model2.1.conv_block.5.bias"}
    with pytest.raises(AnimeVideoModelError, match="model2.1.conv_block.5.bias"):
        loader.load_lineart_model(_save(tmp_path / "short.pth", broken))
    # three output channels (the informative-drawings training repo's RGB variant)
    rgb = dict(sd, **{"model4.1.weight": torch.zeros(3, 4, 7, 7), "model4.1.bias": torch.zeros(3)})
    with pytest.raises(AnimeVideoModelError, match="3 input and 3 output channels"):
        loader.load_lineart_model(_save(tmp_path / "rgb.pth", rgb))
    # an interrupted download
    data = open(tiny_file, "rb").read()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(AnimeVideoModelError, match="damaged or incomplete"):
        loader.load_lineart_model(str(tmp_path / "half.pth"))


def test_module_prefix_is_stripped(tmp_path, tiny_file):
    sd = torch.load(tiny_file, weights_only=True)
    m = loader.load_lineart_model(_save(tmp_path / "dp.pth", {f"module.{k}": v for k, v in sd.items()}))
    assert m.config == tiny.TINY_CONFIG


# ---------------------------------------------------------------------------------------------
# Parity and extraction
# ---------------------------------------------------------------------------------------------

def test_generator_matches_the_float64_reference(tiny_file, tiny_model, one_thread):
    sd = torch.load(tiny_file, weights_only=True)
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = reference_generator(sd, x)
    m64 = loader.load_lineart_model(tiny_file, torch.float64)
    torch.testing.assert_close(m64(x), ref, rtol=0, atol=1e-12)
    out32 = tiny_model(x.float()).double()
    torch.testing.assert_close(out32, ref, rtol=0, atol=2e-5)
    assert ref.std() > 1e-3  # the comparison is not between two constants


def test_extraction_reproduces_lvcds_hint_path_exactly(tiny_file, one_thread):
    sd = torch.load(tiny_file, weights_only=True)
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (3, 16, 24, 3), generator=g, dtype=torch.uint8)
    comfy_image = rgb.float() / 255.0  # what LoadImage gives
    m64 = loader.load_lineart_model(tiny_file, torch.float64)
    hints = extract.extract_lineart(m64, comfy_image, chunk_size=2)
    assert hints.shape == (3, 16, 24, 3) and hints.dtype == torch.float32
    for i in range(3):
        ref = reference_annotator_hint(sd, rgb[i]).float()
        torch.testing.assert_close(hints[i], ref, rtol=0, atol=1e-7)
    assert len(torch.unique(hints)) > 3  # hints on the 1/255 grid, not a constant
    torch.testing.assert_close(torch.round(hints * 255) / 255, hints, rtol=0, atol=1e-6)


def test_fp32_extraction_is_within_one_level_of_the_reference(tiny_file, tiny_model, one_thread):
    sd = torch.load(tiny_file, weights_only=True)
    rgb = torch.randint(0, 256, (1, 16, 16, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    hints = extract.extract_lineart(tiny_model, rgb.float() / 255.0)
    ref = reference_annotator_hint(sd, rgb[0]).float()
    assert (hints[0] - ref).abs().max() <= 1 / 255 + 1e-6
    smooth = extract.extract_lineart(tiny_model, rgb.float() / 255.0, exact=False)
    line = reference_generator(sd, rgb[0].double().div(255).permute(2, 0, 1)[None])[0, 0]
    torch.testing.assert_close(smooth[0, ..., 0].double(), 1 - line, rtol=0, atol=2e-5)


def test_output_shape_range_and_channels(tiny_model, one_thread):
    img = torch.rand(5, 12, 20, 3, generator=torch.Generator().manual_seed(3))
    out = extract.extract_lineart(tiny_model, img, chunk_size=2)
    assert out.shape == (5, 12, 20, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    # chunking does not change the result (instance norm is per frame)
    whole = extract.extract_lineart(tiny_model, img, chunk_size=5)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    # a single HWC frame and RGBA work too
    single = extract.extract_lineart(tiny_model, img[0])
    rgba = extract.extract_lineart(tiny_model, torch.cat([img[:1], torch.ones(1, 12, 20, 1)], dim=-1))
    torch.testing.assert_close(single, out[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(rgba, out[:1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("h,w", [(13, 17), (5, 3), (2, 3), (1, 1), (30, 9)])
def test_odd_sizes_pad_and_crop_back(tiny_file, tiny_model, h, w, one_thread):
    sd = torch.load(tiny_file, weights_only=True)
    img = torch.rand(2, h, w, 3, generator=torch.Generator().manual_seed(h * 100 + w))
    out = extract.extract_lineart(tiny_model, img, exact=False)
    assert out.shape == (2, h, w, 3) and 0 <= out.min() and out.max() <= 1
    if h * w == 1:
        return  # a constant padded frame: instance norm of (almost) zero variance is ill-conditioned by design
    # the rule: replicate the last row/column up to a multiple of 4 (at least 8), run, crop the top-left
    ph = max(8, -(-h // 4) * 4)
    pw = max(8, -(-w // 4) * 4)
    x = img.double().permute(0, 3, 1, 2)
    x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
    ref = 1 - reference_generator(sd, x)[:, 0, :h, :w]
    torch.testing.assert_close(out[..., 0].double(), ref, rtol=0, atol=2e-5)


def test_divisible_sizes_are_not_padded(tiny_model, one_thread):
    x = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(extract.line_map(tiny_model, x), tiny_model(x), rtol=0, atol=0)


def test_progress_and_interrupt_per_chunk(tiny_model):
    calls, checks = [], []
    img = torch.rand(5, 8, 8, 3)
    extract.extract_lineart(tiny_model, img, chunk_size=2, on_chunk=lambda d, t: calls.append((d, t)),
                            check_interrupt=lambda: checks.append(1))
    assert calls == [(2, 5), (4, 5), (5, 5)] and len(checks) == 3

    class Stop(Exception):
        pass

    def stop_after_first():
        if calls2:
            raise Stop
    calls2 = []
    with pytest.raises(Stop):
        extract.extract_lineart(tiny_model, img, chunk_size=2, on_chunk=lambda d, t: calls2.append(d),
                                check_interrupt=stop_after_first)
    assert calls2 == [2]


def test_bad_inputs_are_named(tiny_model):
    with pytest.raises(AnimeVideoInputError, match="image"):
        extract.extract_lineart(tiny_model, torch.rand(2, 8, 8, 2))
    with pytest.raises(AnimeVideoInputError, match="image"):
        extract.extract_lineart(tiny_model, torch.rand(0, 8, 8, 3))
    with pytest.raises(AnimeVideoInputError, match="chunk_size"):
        extract.extract_lineart(tiny_model, torch.rand(1, 8, 8, 3), chunk_size=0)
    with pytest.raises(AnimeVideoInputError, match="polarity"):
        extract.to_hint(torch.rand(1, 8, 8, 3), "inverted")


# ---------------------------------------------------------------------------------------------
# Polarity of user lineart
# ---------------------------------------------------------------------------------------------

def _drawing(n=2, h=16, w=16):
    """White lines (1) on black (0): a few strokes."""
    d = torch.zeros(n, h, w, 3)
    d[:, 4, :, :] = 1
    d[:, :, 9, :] = 1
    d[1:, 12, 2:10, :] = 1
    return d


def test_auto_inverts_black_lines_on_white_paper():
    white_on_black = _drawing()
    paper = 1 - white_on_black  # the same drawing as pencil on paper
    assert extract.detect_polarity(paper) == "black_on_white"
    assert extract.detect_polarity(white_on_black) == "white_on_black"
    for img in (paper, white_on_black):
        hint = extract.to_hint(img, "auto")
        assert hint.shape == (2, 16, 16, 3) and hint.dtype == torch.float32
        torch.testing.assert_close(hint, white_on_black, rtol=0, atol=1e-6)


def test_explicit_polarity_overrides_the_detector():
    d = _drawing()
    torch.testing.assert_close(extract.to_hint(d, "black_on_white"), 1 - d, rtol=0, atol=1e-6)
    torch.testing.assert_close(extract.to_hint(1 - d, "white_on_black"), 1 - d, rtol=0, atol=1e-6)


def test_colour_and_single_channel_lineart_become_grey_three_channels():
    rgb = torch.zeros(1, 4, 4, 3)
    rgb[..., 0] = 1.0  # pure red lines everywhere -> luma 0.299
    hint = extract.to_hint(rgb, "white_on_black")
    torch.testing.assert_close(hint, torch.full((1, 4, 4, 3), 0.299), rtol=0, atol=1e-6)
    one = torch.rand(2, 5, 7, 1)
    hint1 = extract.to_hint(one, "white_on_black")
    assert hint1.shape == (2, 5, 7, 3)
    torch.testing.assert_close(hint1[..., 0], one[..., 0], rtol=0, atol=1e-6)
    # the batch decides together: a dark frame in a light sequence is inverted with the rest
    seq = torch.cat([torch.full((3, 4, 4, 3), 0.9), torch.full((1, 4, 4, 3), 0.4)])
    torch.testing.assert_close(extract.to_hint(seq)[3], torch.full((4, 4, 3), 0.6), rtol=0, atol=1e-6)


def test_out_of_memory_halves_the_chunk_and_gives_the_same_result(tiny_model, monkeypatch):
    img = torch.rand(5, 8, 12, 3, generator=torch.Generator().manual_seed(5))
    expected = extract.extract_lineart(tiny_model, img, chunk_size=1)
    real, sizes = extract.line_map, []

    def tight_memory(model, x):
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, x)

    monkeypatch.setattr(extract, "line_map", tight_memory)
    done = []
    out = extract.extract_lineart(tiny_model, img, chunk_size=8, on_chunk=lambda d, t: done.append(d))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert sizes == [5, 4, 2, 2, 1] and done == [2, 4, 5]
    monkeypatch.setattr(extract, "line_map", lambda m, x: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError):
        extract.extract_lineart(tiny_model, img[:1], chunk_size=1)
