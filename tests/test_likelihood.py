"""PF-ODE likelihoods against the closed form of Gaussian data diagonal in the basis."""

import math

import pytest
import torch

from nudiff.bases import DCT, Haar, Identity
from nudiff.eval.likelihood import bits_per_dim, dequantize, nll_bpd, ode_log_likelihood
from nudiff.oracle import GaussianOracle, field_model
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import MultiSpeed, SoftConditioning, VPCosine

SHAPE = (1, 8, 8)
D = math.prod(SHAPE)


def _setup(basis_name: str, schedule_name: str):
    basis = {"identity": Identity, "haar": lambda s: Haar(s, 2), "dct": DCT}[basis_name](SHAPE)
    if schedule_name == "uniform":
        schedule = VPCosine()
    elif basis_name == "haar":
        schedule = MultiSpeed(basis.level_map() - 1)
    else:
        schedule = SoftConditioning(basis.label(), softness=0.5)
    g = torch.Generator().manual_seed(0)
    # a non-trivial whitening, so the Jacobian of the prior's affine map is exercised
    prior = Prior(
        SHAPE, 0.1 * torch.randn(SHAPE, generator=g), 0.5 + torch.rand(SHAPE, generator=g)
    )
    process = Process(basis, schedule, prior).double()
    oracle = GaussianOracle(process, field_model(SHAPE, basis=basis))
    u0 = oracle.sample_u0(16, torch.Generator().manual_seed(1))
    return process, oracle, process.decode(u0)


def _closed_form(process, oracle, x):
    """The exact PF-ODE model density: per component the affine map from the marginal at
    t_min to the marginal at 1, then the prior; minus the whitening's log-scale."""
    u = process.encode(x)
    t0 = torch.full((1,), process.t_min, dtype=torch.float64)
    mean0, var0 = oracle.marginal(t0)
    mean1, var1 = oracle.marginal(torch.ones(1, dtype=torch.float64))
    u1 = mean1 + (var1 / var0).sqrt() * (u - mean0)
    lp = process.prior_log_prob(u1) + 0.5 * torch.log(var1 / var0).expand(u.shape).flatten(1).sum(1)
    return lp - process.prior.scale.double().log().sum()


@pytest.mark.parametrize("schedule", ["uniform", "non-uniform"])
@pytest.mark.parametrize("basis", ["identity", "haar", "dct"])
def test_ode_likelihood_matches_the_closed_form(basis, schedule):
    process, oracle, x = _setup(basis, schedule)
    out = ode_log_likelihood(oracle, process, x, divergence="exact", rtol=1e-6, atol=1e-6)
    expected = _closed_form(process, oracle, x)
    error_bpd = (out.log_prob - expected).abs().max() / (D * math.log(2))
    assert error_bpd < 0.01, error_bpd
    assert out.nfe > 0
    # the model's density at t_min is the data's up to the schedule's end noise
    data_bpd = -oracle.log_prob(x) / (D * math.log(2))
    assert (data_bpd - (-expected / (D * math.log(2)))).abs().max() < 0.05


def test_hutchinson_agrees_with_the_exact_divergence():
    process, oracle, x = _setup("dct", "non-uniform")
    exact = ode_log_likelihood(oracle, process, x, divergence="exact").log_prob
    # the oracle's Jacobian is diagonal in u: Rademacher probes give the trace exactly
    g = torch.Generator().manual_seed(0)
    rad = ode_log_likelihood(oracle, process, x, divergence="hutchinson", generator=g).log_prob
    torch.testing.assert_close(rad, exact, rtol=1e-6, atol=1e-6)
    # Gaussian probes are unbiased with a spread: agreement within the standard error
    gauss = ode_log_likelihood(
        oracle, process, x, divergence="hutchinson", probes="gaussian", n_probes=4, generator=g
    ).log_prob
    diff = gauss - exact
    assert diff.std() > 1e-3  # really stochastic
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff))


def test_bits_per_dim_of_dequantised_uint8_data():
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (4, 1, 8, 8), generator=g, dtype=torch.uint8)
    x = dequantize(k, g)
    assert x.min() >= -1 and x.max() < 1
    assert ((x + 1) * 128).floor().to(torch.uint8).equal(k)
    # a uniform density on [-1, 1)^D is exactly 8 bits per dimension of the uint8 data
    log_prob = torch.full((4,), -D * math.log(2.0))
    torch.testing.assert_close(bits_per_dim(log_prob, D), torch.full((4,), 8.0))


def test_nll_bpd_reports_mean_stderr_and_counts():
    process, oracle, _ = _setup("haar", "non-uniform")
    images = torch.randint(0, 256, (6, *SHAPE), generator=torch.Generator().manual_seed(2))
    out = nll_bpd(oracle, process, images.to(torch.uint8), batch_size=4, rtol=1e-4, atol=1e-4)
    assert out["n"] == 6 and out["stderr"] > 0 and out["nfe_mean"] > 0
    assert math.isfinite(out["nll_bpd"])
    with pytest.raises(ValueError, match="uint8"):
        nll_bpd(oracle, process, images.float())
    with pytest.raises(ValueError, match="the model is"):
        nll_bpd(oracle, process, torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="divergence must be one of"):
        ode_log_likelihood(oracle, process, process.decode(torch.zeros(1, *SHAPE)), divergence="x")
