import numpy as np
import pytest
import scipy.linalg
import torch

from nudiff.eval import frechet_distance, frechet_standard_error, gaussian_stats, kid


def random_stats(rng, d):
    """A random mean (D,) and a well-conditioned SPD covariance (D, D)."""
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


def test_gaussian_stats_matches_numpy():
    x = np.random.default_rng(0).normal(size=(50, 7))
    mu, sigma = gaussian_stats(torch.from_numpy(x).float())
    assert mu.dtype == sigma.dtype == np.float64
    assert mu.shape == (7,) and sigma.shape == (7, 7)
    np.testing.assert_allclose(mu, x.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), atol=1e-6)


def test_gaussian_stats_errors():
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_stats(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.full((3, 2), np.nan))


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(400, 32)) @ np.diag(np.linspace(0.1, 3, 32))
    mu, sigma = gaussian_stats(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)
    # singular covariance (fewer samples than features): still real and ~0
    mu, sigma = gaussian_stats(x[:10])
    d = frechet_distance(mu, sigma, mu, sigma)
    assert isinstance(d, float) and abs(d) < 1e-8 * np.trace(sigma)


@pytest.mark.parametrize("d", [20, 64])
def test_fd_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    (mu1, s1), (mu2, s2) = random_stats(rng, d), random_stats(rng, d)
    direct = (
        np.sum((mu1 - mu2) ** 2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    )
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-6)


def test_fd_is_symmetric_and_nonnegative_for_singular_covariances():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 30)), 2 * rng.normal(size=(12, 30)) + 0.1
    a, b = gaussian_stats(x), gaussian_stats(y)
    d_ab, d_ba = frechet_distance(*a, *b), frechet_distance(*b, *a)
    assert d_ab > 0
    assert d_ab == pytest.approx(d_ba, rel=1e-10)


def test_fd_of_a_translation_is_the_squared_mean_shift():
    rng = np.random.default_rng(3)
    mu, sigma = random_stats(rng, 24)
    shift = rng.normal(size=24)
    d = frechet_distance(mu, sigma, mu + shift, sigma)
    assert d == pytest.approx(np.sum(shift**2), rel=1e-9, abs=1e-9 * np.trace(sigma))


def test_fd_shape_and_psd_errors():
    mu, sigma = random_stats(np.random.default_rng(4), 5)
    with pytest.raises(ValueError, match="means"):
        frechet_distance(mu, sigma, mu[:4], sigma)
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(5, 5\)"):
        frechet_distance(mu, sigma, mu, sigma[:4, :4])
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(mu, sigma, mu, -sigma)
    asym = sigma.copy()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, asym, mu, sigma)


def test_kid_self_is_near_zero_and_a_shift_is_not():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, 16))
    same, same_std = kid(x, x, subsets=50, subset_size=200)
    shifted, shifted_std = kid(x, x + 0.3, subsets=50, subset_size=200)
    assert abs(same) < 4 * same_std + 1e-3
    assert shifted - 3 * shifted_std > same + 3 * same_std
    assert kid(x, x + 0.3, subsets=50, subset_size=200) == (shifted, shifted_std)  # seeded


def test_kid_clips_subset_size_and_checks_shapes():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    mean, std = kid(x, torch.from_numpy(y), subsets=3, subset_size=10**6)
    assert np.isfinite(mean) and std >= 0
    with pytest.raises(ValueError, match="feature dimensions differ"):
        kid(x, y[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        kid(x, y[:1])


def test_fd_standard_error_matches_the_spread_over_independent_draws():
    """The bootstrap standard error of one pair of sets estimates the std of the FD over
    independent pairs of the same sizes (here 40 pairs of 500 four-dimensional vectors)."""
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 0.5, 2.0, 1.0])

    def draw():
        a = rng.normal(size=(500, 4))
        b = rng.normal(size=(500, 4)) * scale + 0.5
        return a, b

    spread = np.std(
        [
            frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
            for a, b in (draw() for _ in range(40))
        ],
        ddof=1,
    )
    a, b = draw()
    se = frechet_standard_error(a, b, rounds=40, seed=1)
    assert 0.6 < se / spread < 1.6, (se, spread)
    assert frechet_standard_error(a, b, seed=1) == frechet_standard_error(a, b, seed=1)
    with pytest.raises(ValueError, match="rounds"):
        frechet_standard_error(a, b, rounds=1)


def test_kid_default_subsets_are_half_the_smaller_set_so_their_std_is_not_zero():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(500, 8)), rng.normal(size=(800, 8)) + 0.2
    _, std = kid(x, y, subsets=20)
    assert std > 0
    assert kid(x, y, subsets=20) == kid(x, y, subsets=20, subset_size=250)
    # subsets of whole sets are all the same set: no spread, the failure the default avoids
    _, whole = kid(x, y[:500], subsets=20, subset_size=500)
    assert whole < 1e-9 * std
