import pytest
import torch
from torch import nn

from nudiff.bases import DCT, Haar
from nudiff.losses import DenoisingLoss, Weighting, sample_times
from nudiff.models.denoiser import Denoiser
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.schedules import MultiSpeed, VPCosine


class Constant(nn.Module):
    """A backbone that outputs a fixed image and records what it was given."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value, self.seen = value, []

    def forward(self, x, c_noise):
        self.seen.append((x, c_noise))
        return torch.full_like(x, self.value)


def test_preconditioning_formulas():
    process = Process(DCT((1, 4, 4)), VPCosine()).double()
    u = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    alpha, sigma = process.coefficients(t)
    sd = 0.5
    n2 = sigma**2 + alpha**2 * sd**2
    expected = {
        "edm": alpha * sd**2 / n2 * u,
        "x0": torch.zeros_like(u),
        "eps": u / alpha,
        "v": alpha * u / (alpha**2 + sigma**2),
    }
    for kind, want in expected.items():
        backbone = Constant()
        d = Denoiser(process, backbone, kind, sd).double()
        torch.testing.assert_close(d(u, t), want)
        x, c = backbone.seen[0]
        # the backbone sees the unit-variance-scaled input in image space, and t + group log-SNR
        torch.testing.assert_close(x, process.basis.inverse(u / n2.sqrt()))
        assert c.shape == (3, 1 + len(process.basis.groups()[1]))
        torch.testing.assert_close(c[:, 0], t)


def test_inactive_components_get_the_prior_answer():
    haar = Haar((1, 8, 8), 2)
    process = Process(haar, MultiSpeed(haar.level_map() - 1)).double()
    d = Denoiser(process, Constant(3.0), "edm").double()
    u = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.5, 0.9], dtype=torch.float64)
    mask = process.inactive(t)
    alpha, sigma = process.coefficients(t)
    out = d(u, t)
    exact = alpha * u / (alpha**2 + sigma**2)
    assert mask.any() and (~mask).any()
    assert torch.equal(out[mask], exact.expand_as(u)[mask])
    # so the implied score is exactly the unit-variance prior score
    score = process.score_from_x0(u, t, out)
    torch.testing.assert_close(score[mask], (-u / (alpha**2 + sigma**2))[mask])


def test_loss_at_oracle_equals_weighted_posterior_variance():
    haar = Haar((1, 8, 8), 2)
    process = Process(haar, MultiSpeed(haar.level_map() - 1)).double()
    data = field_model(haar.shape, basis=haar)
    oracle = GaussianOracle(process, data)
    g = torch.Generator().manual_seed(0)
    for weighting in ("uniform", "likelihood", "min-snr"):
        loss = DenoisingLoss(process, Weighting(process, weighting, "edm")).double()
        n = 4000
        t = torch.full((n,), 0.3, dtype=torch.float64)
        noise = {"t": t, "eps": torch.randn(n, *haar.shape, generator=g, dtype=torch.float64)}
        x0 = data.sample(n, g, dtype=torch.float64)
        per_elem = loss.elementwise(oracle, x0, noise).mean(0)
        alpha, sigma = process.coefficients(t[:1])
        post_var = oracle.w * sigma**2 / (alpha**2 * oracle.w + sigma**2)
        want = (loss.weight(t[:1], x0[:1]) * post_var)[0]
        ratio = per_elem[want > 0] / want[want > 0]
        assert (ratio.mean() - 1).abs() < 0.02, (weighting, ratio.mean())
        assert (per_elem[want == 0] == 0).all()


def test_sample_times_modes():
    g = torch.Generator().manual_seed(0)
    t = sample_times(1000, "stratified", g, t_min=0.0)
    counts = torch.histc(t, bins=10, min=0, max=1)
    assert (counts == 100).all()  # exactly one draw per stratum of width 1/n
    t = sample_times(1000, "interval", g, interval=(0.25, 0.5))
    assert t.min() >= 0.25 and t.max() <= 0.5
    t = sample_times(1000, "uniform", g, t_min=0.1)
    assert t.min() >= 0.1


def test_draw_is_reproducible_and_sliceable():
    process = Process(DCT((1, 4, 4)), VPCosine())
    loss = DenoisingLoss(process)
    a = loss.draw(8, torch.Generator().manual_seed(3))
    b = loss.draw(8, torch.Generator().manual_seed(3))
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["eps"], b["eps"])
    assert a["t"].shape == (8,) and a["eps"].shape == (8, 1, 4, 4)


def test_edm_with_data_moments_is_the_gaussian_oracle_at_zero_output():
    haar = Haar((2, 8, 8), 2)
    process = Process(haar, MultiSpeed(haar.level_map() - 1)).double()
    g = torch.Generator().manual_seed(0)
    data = field_model(haar.shape, basis=haar)
    data.mean.copy_(torch.randn(haar.shape, generator=g, dtype=torch.float64))
    oracle = GaussianOracle(process, data)
    d = Denoiser(process, Constant(0.0), "edm", data_mean=oracle.m, data_std=oracle.w.sqrt())
    d = d.double()
    u = torch.randn(4, *haar.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    # active components: the oracle (to the float32 precision of the buffers); inactive ones
    # get the unit-variance prior's answer instead (tested above)
    active = ~process.inactive(t).expand_as(u)
    assert active.float().mean() > 0.5
    torch.testing.assert_close(d(u, t)[active], oracle(u, t)[active], atol=1e-5, rtol=1e-5)


def test_noise_conditioning_is_t_and_the_group_log_snrs_or_t_alone():
    """``log_snr_groups``: t and each basis group's mean log-SNR / 8, so one network tells two
    schedules apart at the same t; ``t``: the time alone, the same for both."""
    from nudiff.schedules import SoftConditioning

    haar = Haar((1, 8, 8), 2)
    u = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    index, names = haar.groups()
    seen = {}
    for conditioning in ("log_snr_groups", "t"):
        for softness in (0.5, 2.0):
            process = Process(haar, SoftConditioning(haar.label(), softness)).double()
            backbone = Constant()
            Denoiser(process, backbone, noise_conditioning=conditioning).double()(u, t)
            seen[conditioning, softness] = backbone.seen[0][1]
            width = Denoiser.noise_features(process, conditioning=conditioning)
            assert seen[conditioning, softness].shape == (2, width)
    lam = process.log_snr(t).expand(2, 1, 8, 8)
    groups = torch.stack([lam[:, index == g].mean(1) for g in range(len(names))], 1)
    torch.testing.assert_close(seen["log_snr_groups", 2.0], torch.cat([t[:, None], groups / 8], 1))
    torch.testing.assert_close(seen["t", 2.0], t[:, None])
    assert not torch.allclose(seen["log_snr_groups", 0.5], seen["log_snr_groups", 2.0])
    assert torch.equal(seen["t", 0.5], seen["t", 2.0])
    with pytest.raises(ValueError, match="noise_conditioning must be one of"):
        Denoiser(process, Constant(), noise_conditioning="sigma")
