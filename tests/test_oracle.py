import math

import pytest
import torch

from conftest import schedule_cases
from nudiff.bases import DCT, Haar
from nudiff.oracle import (
    DiagonalGaussian,
    GaussianOracle,
    field_model,
    gaussian_random_field,
    power_law_variance,
)
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import MultiSpeed, VPCosine

CASES = schedule_cases((1, 4, 4))
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_denoiser_equals_monte_carlo_posterior_mean(case, gen):
    _, basis, schedule = case
    data = DiagonalGaussian(
        basis, 0.3 * torch.ones(basis.shape, dtype=torch.float64), power_law_variance(basis)
    )
    process = Process(basis, schedule).double()
    oracle = GaussianOracle(process, data)
    t = torch.tensor([0.35], dtype=torch.float64)
    alpha, sigma = process.coefficients(t)
    ut = process.marginal(
        oracle.sample_u0(1, gen),
        t,
        torch.randn(1, *basis.shape, generator=gen, dtype=torch.float64),
    )
    # self-normalised importance sampling: draws from p(u0), weights p(u_t | u0)
    n = 400000
    u0 = oracle.sample_u0(n, gen)
    logw = -0.5 * ((ut - alpha * u0) / sigma) ** 2
    w = torch.softmax(logw, dim=0)
    mc = (w * u0).sum(0)
    ess = 1 / (w**2).sum(0)
    post_sd = (oracle.w * sigma[0] ** 2 / (alpha[0] ** 2 * oracle.w + sigma[0] ** 2)).sqrt()
    se = post_sd / ess.sqrt()
    err = ((mc - oracle(ut, t)[0]) / se).abs()
    assert err.max() < 5.5, err.max()


def test_nll_equals_direct_gaussian_log_density(gen):
    basis = Haar((2, 4, 4), 2)
    mean = torch.randn(basis.shape, generator=gen, dtype=torch.float64)
    data = DiagonalGaussian(basis, mean, power_law_variance(basis, 1.5))
    x = data.sample(6, gen, dtype=torch.float64)
    # the same density written directly in pixel space: N(B^T mu, B^T diag(v) B)
    d = basis.numel
    eye = torch.eye(d, dtype=torch.float64).view(d, *basis.shape)
    bt = basis.inverse(eye).reshape(d, d).T  # column j = B^T e_j
    cov = bt @ torch.diag(data.var.flatten()) @ bt.T
    direct = torch.distributions.MultivariateNormal(bt @ mean.flatten(), cov)
    torch.testing.assert_close(data.log_prob(x), direct.log_prob(x.flatten(1)))
    # the PF-ODE model density matches it up to the (tiny) prior mismatch of alpha(1)
    prior = Prior(basis.shape, mean.float(), data.var.sqrt().float())
    for p in (None, prior):
        oracle = GaussianOracle(Process(basis, VPCosine(-30, 15), p).double(), data)
        torch.testing.assert_close(oracle.flow_log_prob(x), oracle.log_prob(x), atol=1e-5, rtol=0)


def test_flow_log_prob_counts_prior_mismatch():
    basis = DCT((1, 4, 4))
    data = field_model(basis.shape, basis=basis)
    # log-SNR only reaches -2 at t = 1: alpha(1)^2 = 0.12, a visible mismatch
    oracle = GaussianOracle(Process(basis, VPCosine(-2, 10)).double(), data)
    x = data.sample(3, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (oracle.flow_log_prob(x) - oracle.log_prob(x)).abs().min() > 1e-3


def test_gaussian_random_field_spectrum(gen):
    shape = (3, 16, 16)
    x = gaussian_random_field(20000, shape, exponent=2.5, generator=gen)
    assert x.shape == (20000, *shape)
    assert abs(x.var() - 1) < 0.02
    z = DCT(shape)(x.double())
    expected = power_law_variance(DCT(shape), 2.5)
    ratio = z.var(0) / expected
    assert (ratio - 1).abs().max() < 6 * math.sqrt(2 / 20000)
    # a power law: variance falls with frequency
    freq = DCT(shape).label()
    assert z.var(0)[freq > 0.3].mean() < 0.05 * z.var(0)[freq < 0.1].mean()


def test_multispeed_oracle_inactive_bands_are_at_prior(gen):
    haar = Haar((1, 8, 8), 3)
    process = Process(haar, MultiSpeed(haar.level_map() - 1)).double()
    oracle = GaussianOracle(process, field_model(haar.shape, basis=haar))
    t = torch.tensor([0.6], dtype=torch.float64)
    mask = process.inactive(t)
    mean, var = oracle.marginal(t)
    # inactive bands: N(alpha m, alpha^2 w + sigma^2) with alpha^2 = sigmoid(-10) ~ 4.5e-5
    assert mask.sum() == 48 + 12
    assert (var[mask] - 1).abs().max() < 2e-4 and mean[mask].abs().max() == 0
    torch.testing.assert_close(
        oracle.score(torch.ones(1, *haar.shape, dtype=torch.float64), t)[mask],
        -torch.ones(60, dtype=torch.float64),
        atol=2e-4,
        rtol=0,
    )
