"""EDM's log-normal training times (``loss.t_sampling: log-normal``) for any schedule."""

from pathlib import Path

import pytest
import torch

from nudiff.bases import DCT, Haar
from nudiff.build import build_denoiser, build_loss, build_process
from nudiff.config import ConfigError, load_config
from nudiff.losses import DenoisingLoss, LogNormalTimes, TimeSampling, sample_times
from nudiff.process import Process
from nudiff.schedules import EDM, MultiSpeed, VPCosine
from nudiff.schedules.reference import ReferenceTime

ROOT = Path(__file__).resolve().parents[1]


def _cdf_positions(lam, mean, std, lam_lo, lam_hi):
    """Where each log-SNR falls in the truncated normal's CDF, in [0, 1]."""
    ndtr = torch.special.ndtr
    a, b = ndtr(torch.tensor((lam_lo - mean) / std)), ndtr(torch.tensor((lam_hi - mean) / std))
    return (ndtr((lam.double() - mean) / std) - a) / (b - a)


@pytest.mark.parametrize("mean,std", [(2.4, 2.4), (-1.0, 0.7)])
def test_log_normal_times_are_stratified_in_the_truncated_normal(mean, std):
    process = Process(DCT((1, 4, 4)), VPCosine())
    density = LogNormalTimes(process, mean, std)
    n = 4000
    g = torch.Generator().manual_seed(0)
    t = sample_times(n, "log-normal", g, process.t_min, None, density)
    assert t.shape == (n,) and t.dtype == torch.float32
    assert t.min() >= process.t_min and t.max() <= 1.0
    lam = process.schedule.log_snr(t.double()).flatten()
    lam_ends = process.schedule.log_snr(torch.tensor([1.0, process.t_min])).flatten().tolist()
    u = _cdf_positions(lam, mean, std, *lam_ends).sort().values
    # one draw per 1/n stratum of the CDF, up to the table's interpolation and float32 times
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert (u - centres).abs().max() < 0.5 / n + 2e-3


def test_edm_schedule_gets_edm_noise_levels():
    """With EDM's schedule the defaults are EDM's ln sigma ~ N(-1.2, 1.2^2) (sigma in
    [0.002, 80] truncates it 4.7 std below the mean and 7 above: no visible truncation)."""
    process = Process(DCT((1, 4, 4)), EDM())
    loss_times = LogNormalTimes(process)
    t = sample_times(20000, "log-normal", torch.Generator().manual_seed(1), density=loss_times)
    _, sigma = process.schedule.alpha_sigma(t.double())
    log_sigma = sigma.log().flatten()
    assert abs(log_sigma.mean() - (-1.2)) < 0.01
    assert abs(log_sigma.std() - 1.2) < 0.01


def test_per_component_reference_is_the_mean_log_snr_and_intervals_are_kept():
    basis = Haar((1, 8, 8), levels=2)
    process = Process(basis, MultiSpeed(basis.level_map() - 1))
    ref = ReferenceTime(process)
    t = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64)
    want = process.schedule.log_snr(t).clamp(-20, 20).flatten(1).mean(1)
    torch.testing.assert_close(ref.log_snr(t), want, atol=1e-3, rtol=0)
    density = LogNormalTimes(process)
    g = torch.Generator().manual_seed(0)
    for lo, hi in [(0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0)]:
        t = sample_times(1000, "log-normal", g, interval=(lo, hi), density=density)
        assert t.min() >= lo and t.max() <= hi
    # an interval with no mass in float64 (50 std from the mean) falls back to uniform log-SNR
    far = LogNormalTimes(process, mean=200.0, std=1.0)
    t = sample_times(1000, "log-normal", g, interval=(0.5, 1.0), density=far)
    assert t.isfinite().all() and t.min() >= 0.5 and t.max() <= 1.0
    lam = far.reference.log_snr(t.double())
    width = far.reference.log_snr(torch.tensor(0.5)) - far.reference.log_snr(torch.tensor(1.0))
    assert abs(lam.std() / (width / 12**0.5) - 1) < 0.05  # uniform, not piled on one end
    with pytest.raises(ValueError, match="density is required"):
        sample_times(4, "log-normal", g)


def test_multiscale_loss_draws_log_normal_levels_per_scale():
    cfg = load_config(
        ROOT / "configs" / "quickstart.yaml",
        ["loss.t_sampling=log-normal", "model.sigma_data=0.5", "loss.log_snr_mean=1.0"],
    )
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    loss = build_loss(cfg, process, model)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        noise = loss.draw(2000, g, step=step)
        s = noise["scale"]
        lo, hi = model.interval(s)
        assert ((noise["t"] >= lo) & (noise["t"] <= hi)).all()
        density = loss.losses[s].times.density
        lam_ends = density.reference.log_snr(torch.tensor([hi, lo], dtype=torch.float64))
        lam = density.reference.log_snr(noise["t"].double())
        u = _cdf_positions(lam, 1.0, 2.4, *lam_ends.tolist()).sort().values
        centres = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000
        assert (u - centres).abs().max() < 0.5 / 2000 + 2e-3


@pytest.mark.parametrize(
    "config,overrides,message",
    [
        ("beta_toy1.yaml", [], "does not support loss.t_sampling: log-normal"),
        ("mnist32_ndm.yaml", [], r"\(NDM\) does not support loss.t_sampling: log-normal"),
        ("quickstart.yaml", ["loss.log_snr_std=0"], "log_snr_std"),
    ],
)
def test_log_normal_config_errors(config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / config, ["loss.t_sampling=log-normal", *overrides])


def test_multiscale_loss_honours_uniform_times_in_each_scale():
    cfg = load_config(
        ROOT / "configs" / "quickstart.yaml", ["loss.t_sampling=uniform", "model.sigma_data=0.5"]
    )
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    loss = build_loss(cfg, process, model)
    assert [s.times.mode for s in loss.losses] == ["uniform"] * len(model.scales)
    g = torch.Generator().manual_seed(0)
    noise = loss.draw(4000, g, step=0)
    lo, hi = model.interval(noise["scale"])
    t = noise["t"].double()
    assert ((t >= lo) & (t <= hi)).all()
    assert abs(t.mean() - (lo + hi) / 2) < 4 * (hi - lo) / (12 * 4000) ** 0.5  # U(lo, hi)
    assert abs(t.std() / ((hi - lo) / 12**0.5) - 1) < 0.05
    # not stratified: i.i.d. draws stray ~1/sqrt(n) from one per 1/n stratum, stratified 0.5/n
    u = ((t - lo) / (hi - lo)).sort().values
    centres = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    assert (u - centres).abs().max() > 10 / 4000
    within = [(s, TimeSampling(s.process, "interval", (0.0, 1.0))) for s in loss.losses]
    with pytest.raises(ValueError, match="stratified, uniform or log-normal"):
        type(loss)(model, [DenoisingLoss(s.process, s.weighting, times) for s, times in within])
