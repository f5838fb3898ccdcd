"""The metrics' feature networks: released key layouts, loading, LPIPS parity and the FVD/FID clip protocols.

The full-size architectures are built on the meta device and compared with key lists written from the original
code (tests/fixtures/metrics_keys/*.json: VideoGPT's I3D, pytorch-fid's FID Inception, torchvision's AlexNet and
VGG16, the lpips package's head files; each file names its source and commit). The tiny random-weight files
that scripts/make_tiny_models.py writes (same layouts, thinner) load through the real loaders.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from pack_paths import ROOT

from animevideo.pipelines.errors import AnimeVideoInputError, AnimeVideoModelError
from animevideo.pipelines.metrics import features, i3d, inception, loader, lpips, stats

KEYS = os.path.join(ROOT, "tests", "fixtures", "metrics_keys")


def released_keys(name: str) -> dict[str, tuple]:
    with open(os.path.join(KEYS, name + ".json"), encoding="utf-8") as f:
        return {k: tuple(v) for k, v in json.load(f)["keys"].items()}


def model_keys(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def meta_state_dict(keys: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def metrics_path(models_dir, rel):
    return os.path.join(models_dir, "metrics", rel)


# ------------------------------------------------------------------------------------------------------
# Released layouts (full size, meta device)
# ------------------------------------------------------------------------------------------------------

def test_full_size_i3d_has_the_released_keys_and_loads_from_them():
    with torch.device("meta"):
        model = i3d.InceptionI3d()
    assert model_keys(model) == released_keys("i3d_pretrained_400")
    built = i3d.build_from_state_dict(meta_state_dict(released_keys("i3d_pretrained_400")))
    assert built.divisor == 1 and built.num_classes == 400


def test_full_size_fid_inception_has_the_released_keys_and_loads_from_them():
    with torch.device("meta"):
        model = inception.FIDInceptionV3()
    assert model_keys(model) == released_keys("pt_inception-2015-12-05-6726825d")
    built = inception.build_from_state_dict(meta_state_dict(released_keys("pt_inception-2015-12-05-6726825d")))
    assert built.divisor == 1 and built.feature_dims == 2048


@pytest.mark.parametrize("kind,backbone_file,heads_file",
                         [("alex", "alexnet-owt-7be5be79", "lpips_alex"), ("vgg", "vgg16-397923af", "lpips_vgg")])
def test_lpips_reads_the_released_backbone_and_heads(kind, backbone_file, heads_file):
    backbone_keys, head_keys = released_keys(backbone_file), released_keys(heads_file)
    model = lpips.build_lpips(meta_state_dict(backbone_keys), meta_state_dict(head_keys))
    assert model.kind == kind
    ours = model_keys(model.net.features, "features.")
    assert all(backbone_keys[k] == v for k, v in ours.items()) and len(ours) == 2 * len(lpips.SPECS[kind].convs)
    assert {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(model.net.tap_widths())} == head_keys
    assert lpips.heads_kind(meta_state_dict(head_keys)) == kind


def test_wrong_and_damaged_files_get_clear_errors(tmp_path, tiny_models_dir):
    inc = metrics_path(tiny_models_dir, loader.INCEPTION_FILE)
    with pytest.raises(AnimeVideoModelError, match="Inception-v3 network.*I3D Kinetics-400"):
        loader.load_i3d(inc)
    sd = torch.load(metrics_path(tiny_models_dir, loader.I3D_FILE), weights_only=True)
    del sd["Mixed_4c.b1b.bn.running_var"]
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(AnimeVideoModelError, match="1 missing .*Mixed_4c.b1b.bn.running_var"):
        loader.load_i3d(str(tmp_path / "cut.pt"))
    alex_heads = metrics_path(tiny_models_dir, loader.LPIPS_HEADS["alex"])
    vgg = metrics_path(tiny_models_dir, loader.VGG16_FILE)
    with pytest.raises(AnimeVideoModelError, match="lin1.model.1.weight.*the vgg backbone needs"):
        loader.load_lpips(vgg, alex_heads)
    with pytest.raises(AnimeVideoModelError, match="swap the two inputs"):
        loader.load_lpips(alex_heads, metrics_path(tiny_models_dir, loader.ALEX_FILE))


def test_the_tiny_files_use_the_released_names_and_layouts(tiny_models_dir):
    sd = torch.load(metrics_path(tiny_models_dir, loader.I3D_FILE), weights_only=True)
    assert set(sd) == set(released_keys("i3d_pretrained_400"))  # VideoGPT's file: no num_batches_tracked
    sd = torch.load(metrics_path(tiny_models_dir, loader.INCEPTION_FILE), weights_only=True)
    assert set(sd) == set(released_keys("pt_inception-2015-12-05-6726825d"))
    for kind in ("alex", "vgg"):
        heads = torch.load(metrics_path(tiny_models_dir, loader.LPIPS_HEADS[kind]), weights_only=True)
        assert set(heads) == set(released_keys(f"lpips_{kind}"))
        backbone = torch.load(metrics_path(tiny_models_dir, loader.LPIPS_BACKBONES[kind]), weights_only=True)
        features_keys = {k for k in released_keys(loader.LPIPS_BACKBONES[kind][:-4]) if k.startswith("features.")}
        assert {k for k in backbone if k.startswith("features.")} == features_keys


# ------------------------------------------------------------------------------------------------------
# LPIPS parity: torchvision's own AlexNet/VGG16 and the formula written out in float64
# ------------------------------------------------------------------------------------------------------

def reference_lpips(kind: str, backbone_sd: dict, heads_sd: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    torchvision = pytest.importorskip("torchvision")
    taps = lpips.SPECS[kind].taps
    # torchvision's architecture with our tiny widths: rebuild its Sequential from the file's shapes
    layers = []
    for i in range(taps[-1] + 1):
        key = f"features.{i}.weight"
        if key in backbone_sd:
            w = backbone_sd[key]
            stride, pad = {0: (4, 2), 3: (1, 2)}.get(i, (1, 1)) if kind == "alex" else (1, 1)
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[-1], stride, pad).double()
            conv.weight.data, conv.bias.data = w.double(), backbone_sd[f"features.{i}.bias"].double()
            layers.append(conv)
        elif (kind == "alex" and i in (2, 5)) or (kind == "vgg" and i in (4, 9, 16, 23)):
            layers.append(torch.nn.MaxPool2d(3, 2) if kind == "alex" else torch.nn.MaxPool2d(2, 2))
        else:
            layers.append(torch.nn.ReLU())
    full = torchvision.models.alexnet().features if kind == "alex" else torchvision.models.vgg16().features
    assert [type(m) for m in full[:taps[-1] + 1]] == [type(m) for m in layers]  # torchvision's own layer order
    shift = torch.tensor([-.030, -.088, -.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450], dtype=torch.float64).view(1, 3, 1, 1)
    xa, xb = (a.double() - shift) / scale, (b.double() - shift) / scale
    total = torch.zeros(a.shape[0], dtype=torch.float64)
    lin = 0
    for i, layer in enumerate(layers):
        xa, xb = layer(xa), layer(xb)
        if i in taps:
            na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            w = heads_sd[f"lin{lin}.model.1.weight"].double()
            total += ((na - nb) ** 2 * w).sum(1).mean(dim=(1, 2))
            lin += 1
    return total


@pytest.mark.parametrize("kind", ["alex", "vgg"])
def test_lpips_matches_a_float64_re_derivation(kind, tiny_models_dir):
    bpath = metrics_path(tiny_models_dir, loader.LPIPS_BACKBONES[kind])
    hpath = metrics_path(tiny_models_dir, loader.LPIPS_HEADS[kind])
    model = loader.load_lpips(bpath, hpath)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 72, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 64, 72, generator=gen)).clamp(-1, 1)
    ref = reference_lpips(kind, torch.load(bpath, weights_only=True), torch.load(hpath, weights_only=True), a, b)
    torch.testing.assert_close(model(a, b).double(), ref, rtol=1e-4, atol=1e-6)
    assert model(a, a).abs().max() == 0


# ------------------------------------------------------------------------------------------------------
# Protocols and set distances through the tiny networks
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_i3d(tiny_models_dir):
    return loader.load_i3d(metrics_path(tiny_models_dir, loader.I3D_FILE))


@pytest.fixture(scope="module")
def tiny_inception(tiny_models_dir):
    return loader.load_inception(metrics_path(tiny_models_dir, loader.INCEPTION_FILE))


def clips(seed, n, frames=16, h=40, w=48):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(frames, h, w, 3, generator=gen) for _ in range(n)]


def test_fvd_is_zero_for_identical_sets_and_batching_does_not_change_features(tiny_i3d, one_thread):
    a = clips(0, 3)
    fa = features.video_features(tiny_i3d, a, batch_size=3)
    fa_single = features.video_features(tiny_i3d, a, batch_size=1)
    torch.testing.assert_close(fa, fa_single, rtol=1e-4, atol=1e-5)
    assert fa.shape == (3, 400) and fa.std(0).mean() > 0
    assert stats.frechet_distance(fa, fa.clone()).value == pytest.approx(0, abs=1e-8)
    fb = features.video_features(tiny_i3d, [c.flip(0) for c in a], batch_size=3)
    assert stats.frechet_distance(fa, fb).value > 0


def test_video_protocols(tiny_i3d, one_thread):
    short = clips(1, 1, frames=6)[0]
    with pytest.raises(AnimeVideoInputError, match="first 16 frames"):
        features.video_features(tiny_i3d, [short], "standard")
    # GANime: drop frame 0, prepend zero frames (mid-grey in [-1, 1]) up to 9
    got = features.video_features(tiny_i3d, [short], "ganime")
    x = torch.nn.functional.interpolate(short[1:].permute(0, 3, 1, 2), size=(224, 224), mode="bilinear",
                                        align_corners=False) * 2 - 1
    x = torch.cat([torch.zeros(4, 3, 224, 224), x]).permute(1, 0, 2, 3)[None]
    torch.testing.assert_close(got, tiny_i3d(x).double(), rtol=1e-4, atol=1e-6)
    long = clips(2, 1, frames=40)[0]
    assert features.video_features(tiny_i3d, [long], "windows").shape[0] == 2  # 0-15, 16-31; the tail is dropped
    standard = features.video_features(tiny_i3d, [long], "standard")
    torch.testing.assert_close(standard, features.video_features(tiny_i3d, [long[:16]], "standard"))
    with pytest.raises(AnimeVideoInputError, match="NaN"):
        features.video_features(tiny_i3d, [torch.full((16, 8, 8, 3), float("nan"))])
    with pytest.raises(AnimeVideoInputError, match="no clips"):
        features.video_features(tiny_i3d, [])


def test_fid_features_and_identical_sets(tiny_inception, one_thread):
    a = clips(3, 2, frames=3)
    fa = features.image_features(tiny_inception, a, batch_size=4)
    assert fa.shape == (6, 128)
    assert stats.frechet_distance(fa, fa.clone()).value == pytest.approx(0, abs=1e-8)
    # frames already at 299x299 go in unresized
    x = torch.rand(1, 299, 299, 3)
    torch.testing.assert_close(features.image_features(tiny_inception, [x]),
                               tiny_inception(x.permute(0, 3, 1, 2) * 2 - 1).double())


# ------------------------------------------------------------------------------------------------------
# I3D internals: TF "SAME" padding and the batch-norm folding the loader applies
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride", [((3, 3, 3), (1, 1, 1)), ((7, 7, 7), (2, 2, 2)), ((1, 3, 3), (1, 2, 2)),
                                           ((2, 2, 2), (2, 2, 2))])
def test_same_padding_matches_tf_and_the_explicit_pad(kernel, stride):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 9, 15, 14, generator=gen)
    expected_size = [-(-s // st) for s, st in zip(x.shape[2:], stride)]  # TF SAME: ceil(size / stride)
    unit = i3d.Unit3D(3, 4, kernel, stride, bn=False, relu=False, bias=True).eval()
    ref = torch.nn.functional.conv3d(i3d.pad_same(x, kernel, stride), unit.conv3d.weight, unit.conv3d.bias, stride)
    out = unit(x)
    assert list(out.shape[2:]) == expected_size
    torch.testing.assert_close(out, ref)
    pool = i3d.MaxPoolSame(kernel, stride)
    pooled = pool(x)  # x >= 0 like the network's post-ReLU inputs
    assert list(pooled.shape[2:]) == expected_size
    torch.testing.assert_close(pooled, torch.nn.functional.max_pool3d(i3d.pad_same(x, kernel, stride), kernel, stride))


def test_folding_batch_norms_keeps_the_features(tiny_models_dir, one_thread):
    path = metrics_path(tiny_models_dir, loader.I3D_FILE)
    plain, fused = loader.load_i3d(path, fuse=False), loader.load_i3d(path)
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules())
    x = torch.rand(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    a, b = plain(x), fused(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_fid_blocks_pool_like_the_tf_graph():
    """pytorch-fid's FID blocks: A, C and the first E average-pool without counting the padding; Mixed_7c max-pools."""
    torch.manual_seed(3)
    model = inception.FIDInceptionV3(divisor=16).eval()
    f = torch.nn.functional
    avg = lambda x: f.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # noqa: E731
    mx = lambda x: f.max_pool2d(x, 3, stride=1, padding=1)  # noqa: E731
    for name, cin, pool in (("Mixed_5b", 12, avg), ("Mixed_6b", 48, avg), ("Mixed_7b", 80, avg), ("Mixed_7c", 128, mx)):
        block = getattr(model, name)
        x = torch.rand(1, cin, 9, 9) * 4 - 1  # negative values: zero padding would count in a max and an average
        out = block(x)
        width = block.branch_pool.conv.out_channels
        torch.testing.assert_close(out[:, -width:], block.branch_pool(pool(x)))
