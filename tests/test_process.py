import math

import pytest
import torch
from torchdiffeq import odeint

from conftest import schedule_cases
from nudiff.bases import DCT
from nudiff.oracle import DiagonalGaussian, GaussianOracle, power_law_variance
from nudiff.parametrization import PREDICTIONS, from_x0, targets, to_x0
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import VPCosine

CASES = schedule_cases()
IDS = [c[0] for c in CASES]


def make_problem(basis, schedule, matched: bool):
    g = torch.Generator().manual_seed(7)
    var = power_law_variance(basis, 2.0) * 0.3
    mean = 0.2 * torch.randn(basis.shape, generator=g, dtype=torch.float64)
    data = DiagonalGaussian(basis, mean, var)
    prior = Prior(basis.shape, mean.float(), var.sqrt().float()) if matched else None
    process = Process(basis, schedule, prior).double()
    return process, GaussianOracle(process, data)


@pytest.mark.parametrize("matched", [False, True], ids=["white", "matched"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_marginals_monte_carlo(case, matched, gen):
    _, basis, schedule = case
    process, oracle = make_problem(basis, schedule, matched)
    n = 20000
    x = oracle.data.sample(n, gen, dtype=torch.float64)
    u0 = process.encode(x)
    for t in (0.1, 0.45, 0.9):
        ut = process.marginal(
            u0,
            torch.full((n,), t, dtype=torch.float64),
            torch.randn(u0.shape, generator=gen, dtype=torch.float64),
        )
        mean, var = oracle.marginal(torch.tensor([t], dtype=torch.float64))
        z = (ut.mean(0) - mean[0]) / (var[0] / n).sqrt()
        ratio = ut.var(0) / var[0]
        assert z.abs().max() < 5.0, f"t={t}: mean off by {z.abs().max():.1f} standard errors"
        assert (ratio - 1).abs().max() < 6 * math.sqrt(2 / n)
        assert abs(ratio.mean() - 1) < 6 * math.sqrt(2 / (n * ratio.numel()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_euler_maruyama_forward_sde_reaches_marginals(case, gen):
    _, basis, schedule = case
    process, oracle = make_problem(basis, schedule, matched=False)
    n, steps, t0, t1 = 2000, 2000, 0.05, 0.8
    u0 = oracle.sample_u0(n, gen)
    u = process.marginal(
        u0,
        torch.full((n,), t0, dtype=torch.float64),
        torch.randn(u0.shape, generator=gen, dtype=torch.float64),
    )
    ts = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        f, g2 = process.sde(a.view(1))
        dt = b - a
        u = (
            u
            + f * u * dt
            + (g2 * dt).sqrt() * torch.randn(u.shape, generator=gen, dtype=torch.float64)
        )
    mean, var = oracle.marginal(t1 * torch.ones(1, dtype=torch.float64))
    ratio = u.var(0) / var[0]
    # Monte-Carlo error over n samples plus the O(dt) bias of Euler-Maruyama
    assert abs(ratio.mean() - 1) < 0.03, ratio.mean()
    assert (ratio - 1).abs().max() < 0.2
    assert ((u.mean(0) - mean[0]) / var[0].sqrt()).abs().max() < 0.1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pf_ode_transports_exactly_and_reverses(case, gen):
    _, basis, schedule = case
    process, oracle = make_problem(basis, schedule, matched=True)
    ta, tb = 0.08, 0.92
    ua = process.marginal(
        oracle.sample_u0(16, gen),
        torch.full((16,), ta, dtype=torch.float64),
        torch.randn(16, *basis.shape, generator=gen, dtype=torch.float64),
    )

    def drift(t, u):
        return process.pf_ode_drift(u, t.view(1), oracle.score(u, t.view(1)))

    opts = dict(method="dopri5", rtol=1e-10, atol=1e-10)
    span = torch.tensor([ta, tb], dtype=torch.float64)
    ub = odeint(drift, ua, span, **opts)[-1]
    # the exact map is affine per component: standardised coordinates are preserved
    ma, va = oracle.marginal(span[:1])
    mb, vb = oracle.marginal(span[1:])
    torch.testing.assert_close(ub, mb + (vb / va).sqrt() * (ua - ma), atol=1e-6, rtol=1e-6)
    back = odeint(drift, ub, span.flip(0), **opts)[-1]
    torch.testing.assert_close(back, ua, atol=1e-6, rtol=1e-6)
    # the x0-form of the drift is the same function
    t = torch.tensor([0.5], dtype=torch.float64)
    torch.testing.assert_close(process.pf_ode_velocity(ua, t, oracle(ua, t)), drift(t, ua))


def test_reverse_drift_relation(gen):
    process, oracle = make_problem(DCT((1, 4, 4)), VPCosine(), matched=False)
    u = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)
    score = oracle.score(u, t)
    f, g2 = process.sde(t)
    torch.testing.assert_close(
        process.reverse_sde_drift(u, t, score), 2 * process.pf_ode_drift(u, t, score) - f * u
    )
    torch.testing.assert_close(process.score_from_x0(u, t, oracle(u, t)), score)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_prediction_conversions_round_trip(kind, gen):
    shape = (4, 1, 3, 3)
    x0, eps = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2))
    alpha, sigma = (
        torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1,
        torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1,
    )
    dalpha, dsigma = (
        -torch.rand(shape, generator=gen, dtype=torch.float64),
        torch.rand(shape, generator=gen, dtype=torch.float64),
    )
    u = alpha * x0 + sigma * eps
    coeffs = (u, alpha, sigma, dalpha, dsigma)
    target = targets(x0, eps, kind, alpha, sigma, dalpha, dsigma)
    torch.testing.assert_close(from_x0(x0, kind, *coeffs), target)
    torch.testing.assert_close(to_x0(target, kind, *coeffs), x0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        to_x0(target, "noise", *coeffs)


def test_prior_sampling_and_log_density(gen):
    process = Process(DCT((2, 4, 4)), VPCosine()).double()
    u = process.prior_sample(50000, gen, dtype=torch.float64)
    assert abs(u.var() - 1) < 0.01
    lp = process.prior_log_prob(u[:5])
    var = process.prior_variance().flatten()[0]
    ref = torch.distributions.Normal(0.0, var.sqrt()).log_prob(u[:5]).flatten(1).sum(1)
    torch.testing.assert_close(lp, ref)
    with pytest.raises(ValueError, match="u must have rank 4"):
        process.prior_log_prob(u[0])


def test_encode_decode_round_trip(gen):
    basis = DCT((3, 8, 8))
    prior = Prior(basis.shape, torch.randn(basis.shape), torch.rand(basis.shape) + 0.5)
    process = Process(basis, VPCosine(), prior)
    x = torch.randn(4, 3, 8, 8, generator=gen)
    torch.testing.assert_close(process.decode(process.encode(x)), x, atol=1e-5, rtol=1e-5)


def test_prior_fit_matches_moments(gen):
    basis = DCT((1, 4, 4))
    data = DiagonalGaussian(
        basis,
        torch.randn(basis.shape, generator=gen, dtype=torch.float64),
        power_law_variance(basis),
    )
    x = data.sample(20000, gen, dtype=torch.float64)
    prior = Prior.fit(basis, x.split(3000))
    z = basis(x)
    torch.testing.assert_close(prior.mean, z.mean(0).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prior.scale, z.std(0).float(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        Prior.fit(basis, [])
