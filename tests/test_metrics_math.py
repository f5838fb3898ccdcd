"""The metrics' maths against independent references: scipy, float64 re-derivations, hand-made warps.

No networks here (see test_metrics_networks.py): Fréchet and kernel distances on random features, PSNR/SSIM,
the exact distance transform behind EDMD, and TC's warping error.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch

from animevideo.pipelines.errors import AnimeVideoInputError
from animevideo.pipelines.metrics import edmd, motion_mask, pixel, stats, temporal


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance, written out: scipy.linalg.sqrtm of the product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_matches_scipy_sqrtm():
    gen = np.random.default_rng(0)
    a = gen.normal(size=(60, 6)) @ gen.normal(size=(6, 6))
    b = gen.normal(size=(80, 6)) @ gen.normal(size=(6, 6)) + 0.3
    d = stats.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert d.value == pytest.approx(scipy_frechet(a, b), rel=1e-9, abs=1e-9)
    assert not d.rank_deficient and (d.count_a, d.count_b, d.dims) == (60, 80, 6)


def test_frechet_identical_sets_is_zero_and_a_shift_gives_the_closed_form():
    gen = np.random.default_rng(1)
    a = torch.from_numpy(gen.normal(size=(200, 16)) @ gen.normal(size=(16, 16)))
    assert stats.frechet_distance(a, a.clone()).value == pytest.approx(0.0, abs=1e-8)
    # same samples shifted by delta: equal covariances, so FD = |delta|^2 exactly
    delta = torch.from_numpy(gen.normal(size=16))
    assert stats.frechet_distance(a, a + delta).value == pytest.approx(float(delta @ delta), rel=1e-9)


def test_frechet_of_gaussians_with_known_covariances():
    """Independent Gaussian samples: the estimate converges to the closed form between N(0, I) and N(m, s^2 I)."""
    gen = torch.Generator().manual_seed(2)
    d, s, m = 4, 2.0, 1.5
    a = torch.randn(40000, d, generator=gen, dtype=torch.float64)
    b = torch.randn(40000, d, generator=gen, dtype=torch.float64) * s + m
    closed = d * m ** 2 + d * (1 + s ** 2 - 2 * s)  # |mu|^2 + tr(I + s^2 I - 2 s I)
    assert stats.frechet_distance(a, b).value == pytest.approx(closed, rel=0.02)


def test_rank_deficient_sets_are_reported_and_single_samples_refused():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 12, generator=gen), torch.randn(6, 12, generator=gen)
    d = stats.frechet_distance(a, b)
    assert d.rank_deficient and "rank-deficient" in d.note()
    ref = scipy_frechet(a.double().numpy(), b.double().numpy())
    assert d.value == pytest.approx(ref, rel=1e-6, abs=1e-6)  # still the same number, flagged
    with pytest.raises(AnimeVideoInputError, match="single clip"):
        stats.frechet_distance(a[:1], b)
    with pytest.raises(AnimeVideoInputError, match="single clip"):
        stats.kernel_distance(a, b[:1])


def test_bad_features_are_refused():
    a = torch.randn(4, 3)
    with pytest.raises(AnimeVideoInputError, match="NaN"):
        stats.frechet_distance(a, torch.tensor([[0.0, math.nan, 1.0]] * 3))
    with pytest.raises(AnimeVideoInputError, match="same network"):
        stats.frechet_distance(a, torch.randn(4, 5))
    with pytest.raises(AnimeVideoInputError, match="feature matrix"):
        stats.frechet_distance(torch.randn(4), a)


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops (sklearn's polynomial_kernel defaults)."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kernel_distance_matches_the_loop_formula():
    gen = np.random.default_rng(4)
    x, y = gen.normal(size=(12, 5)), gen.normal(size=(15, 5)) + 0.5
    kd = stats.kernel_distance(torch.from_numpy(x), torch.from_numpy(y))
    assert kd.value == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    # subsets: the mean over subsets of the same formula
    sub = stats.kernel_distance(torch.from_numpy(x), torch.from_numpy(y), subset_size=6, subsets=3, seed=7)
    g = torch.Generator().manual_seed(7)
    expected = []
    for _ in range(3):
        xi = torch.randperm(12, generator=g)[:6].numpy()
        yi = torch.randperm(15, generator=g)[:6].numpy()
        expected.append(brute_force_mmd2(x[xi], y[yi]))
    assert sub.value == pytest.approx(float(np.mean(expected)), rel=1e-10)


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same = stats.kernel_distance(a, b).value
    shifted = stats.kernel_distance(a, b + 1.0).value
    assert abs(same) < 0.05 * shifted and shifted > 0


# ------------------------------------------------------------------------------------------------------
# PSNR / SSIM
# ------------------------------------------------------------------------------------------------------

def numpy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 by explicit windows: [H, W, C] on 0..255, 11x11 Gaussian (1.5), valid positions."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w, ch = a.shape
    vals = []
    for c in range(ch):
        for i in range(h - 10):
            for j in range(w - 10):
                pa, pb = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va = (win * (pa - ma) ** 2).sum()
                vb = (win * (pb - mb) ** 2).sum()
                cov = (win * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_psnr_and_ssim_match_float64_re_derivations():
    gen = torch.Generator().manual_seed(6)
    gold = torch.rand(2, 16, 19, 3, generator=gen)
    generated = (gold + 0.1 * torch.randn(2, 16, 19, 3, generator=gen)).clamp(0, 1)
    psnr = pixel.psnr_per_frame(generated, gold)
    for t in range(2):
        mse = float(((generated[t].double() - gold[t].double()) * 255).pow(2).mean())
        assert float(psnr[t]) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
    ssim = pixel.ssim_per_frame(generated, gold, chunk=1)
    for t in range(2):
        ref = numpy_ssim(generated[t].double().numpy() * 255, gold[t].double().numpy() * 255)
        assert float(ssim[t]) == pytest.approx(ref, rel=1e-9)
    assert torch.isinf(pixel.psnr_per_frame(gold, gold)).all()
    assert pixel.ssim_per_frame(gold, gold) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_pixel_metrics_refuse_bad_input():
    a = torch.rand(2, 16, 16, 3)
    with pytest.raises(AnimeVideoInputError, match="same number of frames"):
        pixel.psnr_per_frame(a, torch.rand(3, 16, 16, 3))
    with pytest.raises(AnimeVideoInputError, match="same number of frames"):
        pixel.ssim_per_frame(a, torch.rand(2, 16, 17, 3))
    with pytest.raises(AnimeVideoInputError, match="NaN"):
        pixel.psnr_per_frame(a, torch.full_like(a, math.nan))
    with pytest.raises(AnimeVideoInputError, match="at least 11x11"):
        pixel.ssim_per_frame(torch.rand(1, 8, 30, 3), torch.rand(1, 8, 30, 3))


# ------------------------------------------------------------------------------------------------------
# EDMD
# ------------------------------------------------------------------------------------------------------

def random_lines(gen, n, h, w, p=0.03):
    return torch.rand(n, h, w, generator=gen) < p


def test_distance_map_matches_scipy_edt():
    gen = torch.Generator().manual_seed(7)
    lines = random_lines(gen, 3, 37, 53)
    lines[2] = False
    lines[2, 0, 52] = True  # a single far corner pixel: long distances along both axes
    ours = edmd.distance_map(lines, row_chunk=5)
    for t in range(3):
        ref = scipy.ndimage.distance_transform_edt(~lines[t].numpy())
        np.testing.assert_allclose(ours[t].numpy(), ref, rtol=0, atol=1e-12)


def test_edmd_is_the_rmse_between_scipy_distance_maps():
    gen = torch.Generator().manual_seed(8)
    a, b = random_lines(gen, 2, 30, 40), random_lines(gen, 2, 30, 40)
    result = edmd.edmd(a, b)
    per = []
    for t in range(2):
        da = scipy.ndimage.distance_transform_edt(~a[t].numpy())
        db = scipy.ndimage.distance_transform_edt(~b[t].numpy())
        per.append(float(np.sqrt(((da - db) ** 2).mean())))
    assert result.per_frame == pytest.approx(per, rel=1e-12)
    assert result.value == pytest.approx(np.mean(per), rel=1e-12)
    assert edmd.edmd(a, a).value == 0.0


def test_edmd_reports_frames_without_lines_and_refuses_shape_mismatch():
    gen = torch.Generator().manual_seed(9)
    a = random_lines(gen, 2, 20, 20)
    b = a.clone()
    b[1] = False
    r = edmd.edmd(a, b)
    assert r.frames_without_lines == 1 and math.isnan(r.per_frame[1]) and r.value == 0.0
    with pytest.raises(AnimeVideoInputError, match="differ in shape"):
        edmd.edmd(a, a[:, :10])


def test_binarize_reads_white_lines_on_black_at_one_half():
    hints = torch.zeros(1, 4, 4, 3)
    hints[0, 1, 2] = 0.9
    hints[0, 2, 2] = 0.4
    assert edmd.binarize(hints)[0].nonzero().tolist() == [[1, 2]]


# ------------------------------------------------------------------------------------------------------
# TC
# ------------------------------------------------------------------------------------------------------

def test_backward_warp_by_whole_pixels_is_a_shift_with_zero_fill():
    gen = torch.Generator().manual_seed(10)
    frame = torch.rand(1, 3, 6, 7, generator=gen, dtype=torch.float64)
    flow = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # out(y, x) = frame(y - 1, x + 2)
    out = temporal.backward_warp(frame, flow)
    expected = torch.zeros_like(frame)
    expected[:, :, 1:, :5] = frame[:, :, :5, 2:]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_tc_against_a_hand_computed_warp():
    gen = torch.Generator().manual_seed(11)
    gold = torch.rand(3, 8, 9, 3, generator=gen, dtype=torch.float64)
    generated = torch.rand(3, 8, 9, 3, generator=gen, dtype=torch.float64)
    flows = torch.zeros(2, 2, 8, 9, dtype=torch.float64)
    flows[:, 0] = 1.0  # F_{t+1 -> t}: each pixel of t+1 comes from one pixel to the right in t

    def hand_error(frames):  # W(f_t)(y, x) = f_t(y, x + 1), zero past the right edge
        errs = []
        for t in range(2):
            warped = torch.zeros_like(frames[t])
            warped[:, :-1] = frames[t][:, 1:]
            errs.append(float((warped - frames[t + 1]).norm() / frames[t + 1].norm()))
        return sum(errs) / 2

    result = temporal.temporal_consistency(generated, gold, flows)
    assert result.generated_error == pytest.approx(hand_error(generated), rel=1e-12)
    assert result.gold_error == pytest.approx(hand_error(gold), rel=1e-12)
    assert result.value == pytest.approx(hand_error(generated) / hand_error(gold), rel=1e-12)
    assert temporal.temporal_consistency(gold, gold, flows).value == pytest.approx(1.0)


def test_tc_refuses_bad_input():
    a = torch.rand(3, 8, 8, 3)
    with pytest.raises(AnimeVideoInputError, match="one flow per consecutive"):
        temporal.temporal_consistency(a, a, torch.zeros(3, 2, 8, 8))
    with pytest.raises(AnimeVideoInputError, match="at least 2 frames"):
        temporal.temporal_consistency(a[:1], a[:1], torch.zeros(0, 2, 8, 8))


def test_gold_flows_calls_the_estimator_from_t_plus_1_to_t():
    gold = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 4, 5, 3).contiguous()
    seen = []

    def fake_flow(source, target):
        seen.append((source[:, 0, 0, 0].tolist(), target[:, 0, 0, 0].tolist()))
        return torch.zeros(source.shape[0], 2, 4, 5)

    flows = temporal.gold_flows(gold, fake_flow, chunk=1)
    assert flows.shape == (2, 2, 4, 5)
    assert seen == [([1.0], [0.0]), ([2.0], [1.0])]


# ------------------------------------------------------------------------------------------------------
# Motion-mask precision (AniSora; our reconstruction)
# ------------------------------------------------------------------------------------------------------

def test_motion_mask_precision_counts_moving_pixels_inside_the_mask():
    clip = torch.zeros(3, 10, 10, 3)
    clip[1, 2:4, 2:4] = 1.0  # 4 pixels change in pair 0 and back in pair 1
    clip[2, 7:9, 1:6] = 1.0  # 10 more pixels change in pair 1
    mask = torch.zeros(10, 10)
    mask[:5, :5] = 1
    r = motion_mask.motion_mask_precision(clip, mask)
    # pair 0: 4 moving, all inside; pair 1: 4 inside + 10 outside
    assert r.per_pair == pytest.approx((1.0, 4 / 14))
    assert r.precision == pytest.approx(8 / 18)
    assert r.mask_fraction == pytest.approx(0.25)
    assert math.isnan(motion_mask.motion_mask_precision(torch.zeros(2, 4, 4, 3), torch.ones(4, 4)).precision)
