"""Frechet distance between Gaussian fits of feature sets, and the Kernel Inception Distance.

Both take features ``(N, D)`` from any network: :mod:`nudiff.eval.features` trains a small
offline one, or wraps Inception-v3 (FID proper) when its weights are available locally.
"""

from __future__ import annotations

import numpy as np
import torch

# relative size of the asymmetry and negative eigenvalues of a covariance put down to rounding
_PSD_TOL = 1e-6


def _as_features(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased (N - 1) covariance ``(D, D)``, float64, of features ``(N, D)``."""
    x = _as_features(features, "features")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {n}")
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, xc.T @ xc / (n - 1)


def _psd_eigh(sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of a symmetric PSD matrix, rounding noise set to 0."""
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    if np.abs(sigma - sigma.T).max() > _PSD_TOL * scale:
        raise ValueError(f"{name} must be a symmetric covariance matrix")
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    top = max(w.max(), 0.0)
    if w.min() < -_PSD_TOL * top:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {w.min():.3g}, "
            f"largest {top:.3g})"
        )
    # eigenvalues this small are indistinguishable from 0 after eigh; zeroing them keeps
    # their square roots (~sqrt(eps)) out of the result when the covariance is singular
    w[w <= len(w) * np.finfo(np.float64).eps * top] = 0.0
    return w, v


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Frechet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1^1/2 S2 S1^1/2)`` with means ``(D,)`` and
    covariances ``(D, D)``. The last trace is the sum of the singular values of
    ``S1^1/2 S2^1/2``, taken by SVD from the symmetric eigendecompositions of ``S1`` and ``S2``
    in float64: unlike ``scipy.linalg.sqrtm(S1 @ S2)`` the result is always real, and exact up
    to rounding even for singular covariances (fewer samples than features). Eigenvalues at
    rounding level (slightly negative ones included) are set to 0; a result that rounding
    made slightly negative is returned as 0.
    """
    mu1, mu2 = (np.asarray(m, dtype=np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(s, dtype=np.float64) for s in (sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {s.shape}")
    w1, v1 = _psd_eigh(sigma1, "sigma1")
    w2, v2 = _psd_eigh(sigma2, "sigma2")
    # S1^1/2 S2^1/2 = V1 [diag(sqrt w1) V1^T V2 diag(sqrt w2)] V2^T: the bracket's singular values
    cross = np.linalg.svd(np.sqrt(w1)[:, None] * (v1.T @ v2) * np.sqrt(w2), compute_uv=False)
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    dist = mean_term + float(w1.sum() + w2.sum() - 2.0 * cross.sum())
    if -1e-9 * (mean_term + w1.sum() + w2.sum()) <= dist < 0.0:  # rounding, not a bug to hide
        dist = 0.0
    return dist


def kid(
    feat1: torch.Tensor | np.ndarray,
    feat2: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over random subsets.

    Kernel ``k(x, y) = (x . y / D + 1)^3`` on features ``(N1, D)`` and ``(N2, D)``. Each of
    ``subsets`` draws ``m = min(subset_size, N1, N2)`` rows of each set without replacement;
    the draws depend only on ``seed`` and are torch-fidelity's (a ``numpy.random.RandomState``
    choosing the rows of set 1, then of set 2, subset after subset), so at its settings
    (100 subsets of 1,000) the values are torch-fidelity's KID. The default ``subset_size`` is
    half the smaller set, at most 1,000: subsets of a whole set would all be the same, and
    their std 0.
    """
    x = _as_features(feat1, "feat1")
    y = _as_features(feat2, "feat2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size is None:
        subset_size = min(1000, max(2, min(x.shape[0], y.shape[0]) // 2))
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 samples; got subset_size={subset_size} and "
            f"{x.shape[0]}, {y.shape[0]} feature vectors"
        )
    dim = x.shape[1]
    rng = np.random.RandomState(seed)
    draws = [
        (rng.choice(len(x), m, replace=False), rng.choice(len(y), m, replace=False))
        for _ in range(subsets)
    ]
    i1 = np.stack([a for a, _ in draws])  # (S, m)
    i2 = np.stack([b for _, b in draws])
    x, y = torch.from_numpy(x), torch.from_numpy(y)  # torch: far faster batched matmuls
    # batches of subsets, at most ~2^23 numbers per (chunk, m, max(m, D)) array
    chunk = max(1, 2**23 // (m * max(m, dim)))
    values = []
    for start in range(0, subsets, chunk):
        xs = x[torch.from_numpy(i1[start : start + chunk])]  # (S, m, D)
        ys = y[torch.from_numpy(i2[start : start + chunk])]
        kxx = (xs @ xs.mT / dim + 1.0) ** 3
        kyy = (ys @ ys.mT / dim + 1.0) ** 3
        kxy = (xs @ ys.mT / dim + 1.0) ** 3
        # unbiased: the diagonals k(x_i, x_i) are left out of the within-set means
        kk = kxx + kyy
        within = (kk.sum(dim=(1, 2)) - kk.diagonal(dim1=1, dim2=2).sum(dim=1)) / (m * (m - 1))
        values.append(within - 2.0 * kxy.mean(dim=(1, 2)))
    values = torch.cat(values).numpy()
    return float(values.mean()), float(values.std())


def frechet_standard_error(
    feat1: torch.Tensor | np.ndarray,
    feat2: torch.Tensor | np.ndarray,
    rounds: int = 20,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of the Frechet distance between features ``(N1, D)`` and
    ``(N2, D)``: the std of the distance over ``rounds`` resamplings (with replacement) of
    both sets. It measures the sampling noise of a figure at these sample counts (not the
    distance's bias, which grows as N shrinks: compare figures at equal N)."""
    x, y = _as_features(feat1, "feat1"), _as_features(feat2, "feat2")
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    rng = np.random.default_rng(seed)
    values = [
        frechet_distance(
            *gaussian_stats(x[rng.integers(0, len(x), len(x))]),
            *gaussian_stats(y[rng.integers(0, len(y), len(y))]),
        )
        for _ in range(rounds)
    ]
    return float(np.std(values, ddof=1))
