"""The variational bound (ELBO) of per-component schedules against the closed-form NLL."""

import math

import pytest
import torch

from nudiff.bases import DCT, Haar, Identity
from nudiff.build import bands_fine_to_coarse
from nudiff.eval.elbo import elbo_log_likelihood, time_density
from nudiff.eval.likelihood import nll_bpd
from nudiff.oracle import GaussianOracle, field_model
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import MSF, MultiSpeed, SoftConditioning, VPCosine
from test_likelihood import SHAPE, _closed_form

D = math.prod(SHAPE)
BASES = {"identity": Identity, "haar": lambda s: Haar(s, 2), "dct": DCT}


def _schedule(name, basis):
    if name == "vp-cosine":
        return VPCosine()
    if name == "multispeed":
        return MultiSpeed(bands_fine_to_coarse(basis))
    if name == "soft":
        return SoftConditioning(basis.label(), softness=0.5)
    return MSF(basis.level_map() - 1, split=0.4)  # windows: frozen clean, then frozen noise


def _setup(basis_name, schedule_name, n=64):
    basis = BASES[basis_name](SHAPE)
    g = torch.Generator().manual_seed(0)
    # a non-trivial whitening, so the Jacobian of the prior's affine map is exercised
    prior = Prior(
        SHAPE, 0.1 * torch.randn(SHAPE, generator=g), 0.5 + torch.rand(SHAPE, generator=g)
    )
    process = Process(basis, _schedule(schedule_name, basis), prior).double()
    oracle = GaussianOracle(process, field_model(SHAPE, basis=basis))
    x = process.decode(oracle.sample_u0(n, torch.Generator().manual_seed(1)))
    return process, oracle, x


@pytest.mark.parametrize(
    ("basis", "schedule"),
    [(b, s) for b in ("identity", "haar", "dct") for s in ("vp-cosine", "multispeed", "soft")]
    + [("haar", "msf")],
)
def test_elbo_bounds_the_closed_form_nll_tightly(basis, schedule):
    """With the exact denoiser the bound is >= the NLL (up to 3 Monte-Carlo standard errors of
    the mean over 64 images) and within 0.02 bits/dim of it."""
    process, oracle, x = _setup(basis, schedule)
    g = torch.Generator().manual_seed(0)
    out = elbo_log_likelihood(oracle, process, x, n_times=2048, generator=g)
    assert out.nfe == 2048 and out.log_prob.shape == (64,)
    gap = (_closed_form(process, oracle, x) - out.log_prob) / (D * math.log(2))
    se = gap.std() / math.sqrt(len(gap))
    assert gap.mean() > -3 * se, (gap.mean(), se)
    assert gap.mean() < 0.02, (gap.mean(), se)
    assert se < 0.01  # the test has the resolution to see a 0.02 gap


def test_a_worse_denoiser_has_a_looser_bound():
    process, oracle, x = _setup("haar", "multispeed", n=32)

    def shrunk(u, t):
        return 0.8 * oracle(u, t)

    exact = elbo_log_likelihood(oracle, process, x, n_times=512, generator=torch.Generator())
    worse = elbo_log_likelihood(shrunk, process, x, n_times=512, generator=torch.Generator())
    # prior and reconstruction terms do not depend on the denoiser; the diffusion term does
    torch.testing.assert_close(worse.prior, exact.prior)
    torch.testing.assert_close(worse.reconstruction, exact.reconstruction)
    drop = (exact.log_prob - worse.log_prob) / (D * math.log(2))
    assert drop.mean() > 0.1


def test_time_density_is_uniform_in_log_snr_for_a_scalar_schedule():
    process = Process(Identity(SHAPE), VPCosine()).double()
    edges, probs = time_density(process, cells=4096, uniform=0.0)
    assert torch.isclose(probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    lam = process.log_snr(edges).flatten()
    expected = (lam[:-1] - lam[1:]) / (lam[0] - lam[-1])
    torch.testing.assert_close(probs, expected)
    # per component: the mean log-SNR speed; MSF moves 60 residual components on [0, 0.5]
    # (8x8 Haar, 2 levels) and the 4 base components on [0.5, 1], at the same rate each
    haar = Haar(SHAPE, 2)
    msf = Process(haar, MSF(haar.level_map() - 1, 0.5)).double()
    edges, probs = time_density(msf, cells=100, uniform=0.01)
    assert torch.isclose(probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    first = edges[1:] <= 0.5 + 1e-12
    assert torch.allclose(probs[first], torch.tensor(0.99 * 60 / 64 / 50 + 1e-4).double())
    assert torch.allclose(probs[~first], torch.tensor(0.99 * 4 / 64 / 50 + 1e-4).double())


def test_nll_bpd_takes_either_method():
    process, oracle, x = _setup("dct", "soft", n=4)
    images = ((x.clamp(-1, 0.99) + 1) * 128).floor().to(torch.uint8)
    ode = nll_bpd(oracle, process, images, batch_size=4, method="ode", rtol=1e-4, atol=1e-4)
    elbo = nll_bpd(oracle, process, images, batch_size=4, method="elbo", n_times=256)
    assert elbo["n"] == ode["n"] == 4 and elbo["nfe_mean"] == 256
    assert abs(elbo["nll_bpd"] - ode["nll_bpd"]) < 0.3
    with pytest.raises(ValueError, match="method must be one of"):
        nll_bpd(oracle, process, images, method="vlb")
