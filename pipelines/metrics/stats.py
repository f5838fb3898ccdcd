"""Set-level distances between feature sets: the Fréchet distance (FID, FVD) and the kernel distance (KID, KVD).

Both compare two **sets** of feature vectors (one row per image or clip), so each set needs at least two
rows: with one row the covariance (FID/FVD) is undefined and the unbiased kernel estimate (KID/KVD) divides
by zero. With fewer rows than feature dimensions the covariance is rank-deficient (at most n - 1 non-zero
eigenvalues); the distance is still computed, but it is dominated by estimation noise, which is why the
results carry ``rank_deficient`` and the papers use thousands of samples (2048 clips for FVD, 50k images
for FID).

The matrix square root is taken in float64 through a symmetric eigendecomposition: for covariances A, B,
``tr sqrt(A B) = sum sqrt(eig(sqrt(A) B sqrt(A)))`` (the matrix inside is symmetric positive semi-definite,
so this is exact and has no complex parts, unlike a general ``sqrtm(A @ B)``; tf-gan's
``trace_sqrt_product`` uses the same identity). Tests check it against ``scipy.linalg.sqrtm``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AnimeVideoInputError

KERNEL_DEGREE = 3  # the polynomial kernel of KID (Bińkowski et al. 2018) and GANime's KVD: (x.y / d + 1) ** 3
KERNEL_COEF0 = 1.0


def as_feature_matrix(features, input_name: str) -> torch.Tensor:
    """[n, d] float64 on the CPU; refuses other shapes, fewer than 2 rows and non-finite values."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(features)
    if features.ndim != 2 or features.shape[1] < 1:
        raise AnimeVideoInputError(f"{input_name}: expected a feature matrix [samples, dims], got shape "
                                   f"{tuple(features.shape)}.")
    n = features.shape[0]
    if n < 2:
        raise AnimeVideoInputError(
            f"{input_name}: {n} sample(s). FID/FVD/KID/KVD compare two *sets*: the covariance of one sample is "
            "undefined, so a single clip (or a single pair of clips) has no valid score. Give at least 2 per set; "
            "the papers use thousands (FVD: 2048 clips) because fewer than the feature size (400 for I3D, 2048 for "
            "Inception) leaves the covariance rank-deficient.")
    x = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise AnimeVideoInputError(f"{input_name}: {bad} of {n} feature rows hold NaN or infinite values (a broken "
                                   "clip or a network run in too low precision); nothing was computed.")
    return x


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance (unbiased, n - 1) of a feature set, in float64."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank_deficient(self) -> bool:
        return self.count - 1 < self.dims

    @classmethod
    def of(cls, features, input_name: str = "features") -> "FeatureStats":
        x = as_feature_matrix(features, input_name)
        mean = x.mean(dim=0)
        centred = x - mean
        return cls(mean, centred.T @ centred / (x.shape[0] - 1), int(x.shape[0]))


@dataclass(frozen=True)
class Distance:
    value: float
    count_a: int
    count_b: int
    dims: int
    name: str

    @property
    def rank_deficient(self) -> bool:
        return min(self.count_a, self.count_b) - 1 < self.dims

    def note(self) -> str:
        if not self.rank_deficient:
            return ""
        return (f"{self.name} from {self.count_a} vs {self.count_b} samples of {self.dims}-d features: the covariance "
                f"is rank-deficient (fewer samples than dimensions), so the value is noisy and only comparable with "
                f"runs of the same set sizes")


def trace_sqrt_product(a: torch.Tensor, b: torch.Tensor) -> float:
    """tr(sqrt(a @ b)) for symmetric PSD a, b (float64)."""
    eva, eveca = torch.linalg.eigh(a)
    sqrt_a = (eveca * eva.clamp(min=0).sqrt()) @ eveca.T
    inner = sqrt_a @ b @ sqrt_a
    inner = (inner + inner.T) / 2  # symmetric up to rounding; eigvalsh needs exact symmetry
    return float(torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum())


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats, name: str = "Fréchet distance") -> Distance:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrt(S_a S_b)) (Heusel et al. 2017; Unterthiner et al. 2019)."""
    if a.dims != b.dims:
        raise AnimeVideoInputError(f"features: the two sets have {a.dims}- and {b.dims}-d features; they must come "
                                   "from the same network.")
    diff = a.mean - b.mean
    value = float(diff @ diff) + float(torch.trace(a.cov) + torch.trace(b.cov)) - 2 * trace_sqrt_product(a.cov, b.cov)
    return Distance(max(value, 0.0), a.count, b.count, a.dims, name)


def frechet_distance(features_a, features_b, name: str = "Fréchet distance") -> Distance:
    return frechet_distance_from_stats(FeatureStats.of(features_a, "features of set A"),
                                       FeatureStats.of(features_b, "features of set B"), name)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + KERNEL_COEF0) ** KERNEL_DEGREE


def kernel_distance(features_a, features_b, name: str = "kernel distance", subset_size: int = 1000,
                    subsets: int = 100, seed: int = 0) -> Distance:
    """Unbiased MMD^2 with the cubic polynomial kernel (KID; KVD on I3D features).

    Sets larger than ``subset_size`` are scored as the mean over ``subsets`` random subsets of that size
    (KID's reference implementation, which bounds the n^2 kernel matrices); smaller sets are used whole.
    """
    x = as_feature_matrix(features_a, "features of set A")
    y = as_feature_matrix(features_b, "features of set B")
    if x.shape[1] != y.shape[1]:
        raise AnimeVideoInputError(f"features: the two sets have {x.shape[1]}- and {y.shape[1]}-d features; they "
                                   "must come from the same network.")
    m = min(x.shape[0], y.shape[0], int(subset_size))
    if max(x.shape[0], y.shape[0]) <= subset_size:
        value = _mmd2_unbiased(x, y)
    else:
        gen = torch.Generator().manual_seed(seed)
        total = 0.0
        for _ in range(subsets):
            xs = x[torch.randperm(x.shape[0], generator=gen)[:m]]
            ys = y[torch.randperm(y.shape[0], generator=gen)[:m]]
            total += _mmd2_unbiased(xs, ys)
        value = total / subsets
    return Distance(value, int(x.shape[0]), int(y.shape[0]), int(x.shape[1]), name)


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())
