"""Blurring diffusion and simple diffusion's shifted cosine: formulas, derivatives, exact-oracle
marginals against Monte Carlo, samplers on the oracle, configs."""

import math

import pytest
import torch

from conftest import ROOT
from nudiff.bases import DCT
from nudiff.build import build_linear_process
from nudiff.config import ConfigError, load_config, validate
from nudiff.eval.elbo import time_density
from nudiff.oracle import DiagonalGaussian, GaussianOracle, field_model, power_law_variance
from nudiff.process import Process
from nudiff.samplers import make_grid, sample
from nudiff.schedules import BlurringDiffusion, VPCosine, dct_dissipation_rates, resolution_shift
from test_samplers import _group_errors, _reference, _transport_error

SHAPE = (1, 8, 8)
TIMES = torch.tensor([0.013, 0.21, 0.38, 0.53, 0.77, 0.96], dtype=torch.float64)


def _schedules(shape=SHAPE):
    """(name, schedule): blurring at the paper's blur for 32 x 32 scaled to 8 x 8 (5) and at
    the paper's 20, the cosine shifted both ways, and the interpolated cosine."""
    return [
        ("blurring", BlurringDiffusion(shape, blur_sigma_max=5.0)),
        ("blurring-20", BlurringDiffusion(shape)),
        ("shifted-up", VPCosine(shift=resolution_shift(32, 64))),
        ("shifted-down", VPCosine(-12.0, 9.0, shift=resolution_shift(256, 64))),
        ("interpolated", VPCosine(shift=resolution_shift(512, 32), shift_to=-1.0)),
    ]


CASES = _schedules()
IDS = [c[0] for c in CASES]


def _paper_alpha_sigma(t, h, w, sigma_blur_max, min_scale=0.001, lmin=-10.0, lmax=10.0):
    """The paper's appendix code, written out independently: ``(B, 1, H, W)`` each."""
    t = t.view(-1, 1, 1, 1)
    sigma_blur = sigma_blur_max * torch.sin(t * math.pi / 2) ** 2
    dissipation_time = sigma_blur**2 / 2
    fh = math.pi * torch.linspace(0, h - 1, h, dtype=torch.float64) / h
    fw = math.pi * torch.linspace(0, w - 1, w, dtype=torch.float64) / w
    labda = fh.view(1, 1, h, 1) ** 2 + fw.view(1, 1, 1, w) ** 2
    scaling = torch.exp(-labda * dissipation_time) * (1 - min_scale) + min_scale
    limit_max = math.atan(math.exp(-0.5 * lmax))
    limit_min = math.atan(math.exp(-0.5 * lmin)) - limit_max
    logsnr = -2 * torch.log(torch.tan(limit_min * t + limit_max))
    a, sigma = torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
    return a * scaling, sigma.expand_as(scaling)


# ---------------------------------------------------------------------------- formulas
def test_blurring_follows_the_dct_frequencies_and_the_paper():
    shape = (2, 4, 6)
    rates = dct_dissipation_rates(shape)
    freq = DCT(shape).labels()["frequency"].double()  # sqrt((k_h / 2H)^2 + (k_w / 2W)^2)
    torch.testing.assert_close(rates, 4 * math.pi**2 * freq**2, rtol=1e-6, atol=1e-7)
    schedule = BlurringDiffusion(shape, blur_sigma_max=3.0)
    alpha, sigma = schedule.alpha_sigma(TIMES)
    ref_alpha, ref_sigma = _paper_alpha_sigma(TIMES, 4, 6, 3.0)
    torch.testing.assert_close(alpha, ref_alpha.expand_as(alpha), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sigma, ref_sigma.expand_as(sigma), rtol=1e-12, atol=1e-14)
    # not variance preserving once blurred; the log-SNR is the cosine's + 2 log d
    assert (alpha**2 + sigma**2).flatten(2)[2:, :, 1:].max() < 1 - 1e-6  # all but the mean
    lam = VPCosine(-10.0, 10.0).log_snr(TIMES) + 2 * torch.log(schedule.dissipation(TIMES))
    torch.testing.assert_close(schedule.log_snr(TIMES), lam, rtol=1e-12, atol=1e-12)


COSINES = [c for c in CASES if isinstance(c[1], VPCosine)]


@pytest.mark.parametrize("case", COSINES, ids=[c[0] for c in COSINES])
def test_analytic_cosine_slope(case):
    """The shifted cosines' own log-SNR slope (the finite-difference checks of alpha and
    sigma, for every schedule, are in test_schedules)."""
    _, schedule = case
    h = 1e-6
    fd = (schedule._log_snr(TIMES + h) - schedule._log_snr(TIMES - h)) / (2 * h)
    torch.testing.assert_close(schedule._dlog_snr(TIMES), fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_snr_decreases_hits_its_maximum_and_float32_works(case):
    _, schedule = case
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    lam = schedule.log_snr(t)
    a, s = schedule.alpha_sigma(t)
    torch.testing.assert_close(lam, 2 * (torch.log(a) - torch.log(s)).expand_as(lam))
    assert (lam[1:] < lam[:-1]).all()
    torch.testing.assert_close(lam[0], torch.full_like(lam[0], schedule.log_snr_max))
    a32, s32 = schedule.alpha_sigma(TIMES.float())
    da32, ds32 = schedule.derivatives(TIMES.float())
    assert a32.dtype == torch.float32 and da32.dtype == torch.float32
    assert all(torch.isfinite(x).all() for x in (a32, s32, da32, ds32))


def test_shifted_cosine_limits_shift_and_inverse():
    assert resolution_shift(32, 64) == pytest.approx(2 * math.log(2))
    plain = VPCosine()
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    inner = (t >= 0.1) & (t <= 0.9)
    for shift in (2 * math.log(2), -2 * math.log(4)):
        shifted = VPCosine(shift=shift)
        lam = shifted.log_snr(t).flatten()
        torch.testing.assert_close(lam[[0, -1]], torch.tensor([15.0, -15.0], dtype=lam.dtype))
        # simple diffusion's shifted cosine inside; the truncation keeps the limits at the ends
        gap = lam - plain.log_snr(t).flatten() - shift
        assert gap[inner].abs().max() < 0.03, gap[inner].abs().max()
    s0, s1 = resolution_shift(512, 32), resolution_shift(512, 256)
    interp = VPCosine(shift=s0, shift_to=s1)
    mixed = t * VPCosine(shift=s0)._log_snr(t) + (1 - t) * VPCosine(shift=s1)._log_snr(t)
    torch.testing.assert_close(interp.log_snr(t).flatten(), mixed, rtol=1e-12, atol=1e-12)
    times = torch.linspace(0.02, 0.98, 9, dtype=torch.float64)
    for schedule in (VPCosine(shift=-2.0), interp):
        back = schedule.t_from_log_snr(schedule.log_snr(times).flatten())
        torch.testing.assert_close(back, times, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shift_to >= shift"):
        VPCosine(shift=1.0, shift_to=0.0)


def _cosine(overrides: dict):
    cfg = validate({"process": {"basis": {"type": "identity"}, "schedule": overrides}})
    return build_linear_process(cfg).schedule


def test_shift_at_the_base_resolution_is_the_plain_cosine():
    plain = VPCosine()
    same = [
        _cosine({"type": "vp-cosine", "shift_resolution": 64}),
        _cosine({"type": "vp-cosine", "shift_resolution": 48, "base_resolution": 48}),
        # interpolated from base 64 to interpolate_to = shift_resolution = 64: no shift at all
        _cosine({"type": "vp-cosine", "shift_resolution": 64, "interpolated": True}),
    ]
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for schedule in same:
        for got, want in zip(
            (*schedule.alpha_sigma(t), *schedule.derivatives(t), schedule.log_snr(t)),
            (*plain.alpha_sigma(t), *plain.derivatives(t), plain.log_snr(t)),
            strict=True,
        ):
            torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    shifted = _cosine({"type": "vp-cosine", "shift_resolution": 128})
    assert shifted.shift == pytest.approx(-2 * math.log(2)) and shifted.shift_to is None
    interp = _cosine(
        {
            "type": "vp-cosine",
            "shift_resolution": 512,
            "base_resolution": 32,
            "interpolated": True,
            "interpolate_to": 256,
        }
    )
    assert (interp.shift, interp.shift_to) == pytest.approx((-2 * math.log(16), -2 * math.log(2)))


def test_blurring_without_blur_is_the_cosine():
    cosine = VPCosine(-10.0, 10.0)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for blur, tol in ((0.0, 1e-15), (1e-4, 1e-6)):
        schedule = BlurringDiffusion(SHAPE, blur_sigma_max=blur)
        for got, want in zip(
            (*schedule.alpha_sigma(t), *schedule.derivatives(t)),
            (*cosine.alpha_sigma(t), *cosine.derivatives(t)),
            strict=True,
        ):
            torch.testing.assert_close(got, want.expand_as(got), rtol=tol, atol=tol)


def test_low_frequencies_are_less_attenuated():
    schedule = BlurringDiffusion(SHAPE, blur_sigma_max=5.0)
    order = torch.argsort(schedule.omega2.flatten())  # low frequency first
    t = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    d = schedule.dissipation(t).flatten(1)[:, order]
    lam = schedule.log_snr(t).flatten(1)[:, order]
    torch.testing.assert_close(d[0], torch.ones_like(d[0]))  # no blur at t = 0
    assert (d[:, 0] == 1).all()  # the mean (DC) is never blurred
    # the higher the frequency, the smaller its scale and log-SNR (strictly where the blur has
    # not reached the floor min_scale everywhere yet, at t = 0.2)
    assert (d[:, 1:] <= d[:, :-1]).all() and (lam[:, 1:] <= lam[:, :-1]).all()
    distinct = schedule.omega2.flatten()[order].diff() > 0
    assert (d[1, 1:][distinct] < d[1, :-1][distinct]).all()
    assert (lam[1, 1:][distinct] < lam[1, :-1][distinct]).all()
    # at t = 1 the finest frequency is at the floor, the coarsest near exp(-pi^2/64 * 25/2)
    assert d[-1, -1] == pytest.approx(0.001, rel=1e-6)
    assert d[-1, 1] == pytest.approx(0.999 * math.exp(-(math.pi**2) / 64 * 12.5) + 0.001)
    # more blur, more attenuation
    stronger = BlurringDiffusion(SHAPE, blur_sigma_max=10.0).dissipation(t).flatten(1)[:, order]
    assert (stronger <= d).all() and (stronger[1, 1:] < d[1, 1:]).all()


def test_classes_and_restriction_share_the_schedule_of_a_frequency():
    schedule = BlurringDiffusion((2, 8, 8), blur_sigma_max=5.0)
    reps, inverse = schedule.classes()
    # (k_h, k_w) and (k_w, k_h), both channels, and sums of squares that coincide
    assert len(reps) == torch.unique(schedule.omega2).numel() == 34
    restricted = schedule.restrict(reps)
    assert restricted.shape == (34, 1, 1)
    for full, small in zip(
        (*schedule.alpha_sigma(TIMES), *schedule.derivatives(TIMES), schedule.log_snr(TIMES)),
        (
            *restricted.alpha_sigma(TIMES),
            *restricted.derivatives(TIMES),
            restricted.log_snr(TIMES),
        ),
        strict=True,
    ):
        torch.testing.assert_close(full.flatten(1), small.flatten(1)[:, inverse])


# ------------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("name", ["blurring", "blurring-20", "interpolated"])
def test_oracle_marginals_match_monte_carlo(name, gen):
    shape = (1, 4, 4)
    schedule = dict(_schedules(shape))[name]
    basis = DCT(shape)
    data = DiagonalGaussian(
        basis, 0.3 * torch.ones(shape, dtype=torch.float64), power_law_variance(basis)
    )
    process = Process(basis, schedule).double()
    oracle = GaussianOracle(process, data)
    n = 200_000
    u0 = process.encode(data.sample(n, gen, dtype=torch.float64))
    for t in (0.1, 0.4, 0.8):
        tt = torch.tensor([t], dtype=torch.float64)
        eps = torch.randn(u0.shape, generator=gen, dtype=torch.float64)
        ut = process.marginal(u0, tt, eps)
        mean, var = oracle.marginal(tt)
        z_mean = (ut.mean(0) - mean[0]) / (var[0] / n).sqrt()
        z_var = (ut.var(0) / var[0] - 1) / math.sqrt(2 / n)
        assert z_mean.abs().max() < 5 and z_var.abs().max() < 5, (t, z_mean, z_var)


def test_blurring_oracle_denoiser_equals_the_monte_carlo_posterior_mean(gen):
    shape = (1, 4, 4)
    basis = DCT(shape)
    data = DiagonalGaussian(
        basis, 0.3 * torch.ones(shape, dtype=torch.float64), power_law_variance(basis)
    )
    process = Process(basis, BlurringDiffusion(shape, blur_sigma_max=3.0)).double()
    oracle = GaussianOracle(process, data)
    t = torch.tensor([0.35], dtype=torch.float64)
    alpha, sigma = process.coefficients(t)
    noise = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
    ut = process.marginal(oracle.sample_u0(1, gen), t, noise)
    # self-normalised importance sampling: draws from p(u0), weights p(u_t | u0)
    u0 = oracle.sample_u0(200_000, gen)
    w = torch.softmax(-0.5 * ((ut - alpha * u0) / sigma) ** 2, dim=0)
    mc, ess = (w * u0).sum(0), 1 / (w**2).sum(0)
    post_sd = (oracle.w * sigma[0] ** 2 / (alpha[0] ** 2 * oracle.w + sigma[0] ** 2)).sqrt()
    err = ((mc - oracle(ut, t)[0]) / (post_sd / ess.sqrt())).abs()
    assert err.max() < 5.5, err.max()


# ----------------------------------------------------------------------------- samplers
def _problem(name):
    basis = DCT(SHAPE)
    process = Process(basis, dict(CASES)[name]).double()
    return process, GaussianOracle(process, field_model(SHAPE, basis=basis))


PROBLEMS = {name: _problem(name) for name in ("blurring", "interpolated")}


TRANSPORT = [
    ("blurring", "euler", {}, 300, 4e-2),
    ("blurring", "heun", {}, 100, 2e-2),
    ("blurring", "dpmpp-2m", {}, 100, 4e-3),
    ("blurring", "unipc", {}, 60, 5e-3),
    # in t: the steps use the schedule's derivatives
    ("blurring", "heun", {"variable": "t"}, 100, 2e-2),
    ("interpolated", "heun", {"variable": "t"}, 100, 2e-2),
    ("interpolated", "dpmpp-2m", {}, 50, 1e-2),
]


@pytest.mark.parametrize(("schedule", "name", "options", "steps", "tol"), TRANSPORT)
def test_deterministic_samplers_follow_the_exact_transport(schedule, name, options, steps, tol):
    """Max over components of the RMS error against the exact PF-ODE map of the same prior
    draws, relative to the exact standard deviation (no Monte-Carlo noise)."""
    process, oracle = PROBLEMS[schedule]
    ref = _reference(process, oracle, 128)
    out = sample(
        oracle, process, 128, sampler=name, steps=steps, options=options, dtype=torch.float64
    )
    assert _transport_error(process, oracle, out, ref) < tol


def test_time_grids_and_the_likelihood_time_density_of_blurring():
    process, _ = PROBLEMS["blurring"]
    for kind in ("auto", "uniform", "log-snr", "edm"):
        ts = make_grid(process, 12, kind)
        assert len(ts) == 13 and ts[0] == 1 and ts[-1] == process.t_min
        assert (ts[1:] < ts[:-1]).all()
    edges, probs = time_density(process)
    assert len(edges) == len(probs) + 1 and probs.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["blurring"])
def test_sde_sampler_reaches_the_monte_carlo_floor(schedule):
    """Per DCT octave, |mean sample variance / true variance - 1| within 4 standard errors of
    ``sqrt(2 / (n * group size))`` plus a 1% discretisation allowance, and the mean within 5
    standard errors."""
    process, oracle = PROBLEMS[schedule]
    n = 1500
    out = sample(oracle, process, n, sampler="dpmpp-2m-sde", steps=100, seed=1, dtype=torch.float64)
    errors, sizes = _group_errors(process, oracle, out.u)
    floor = (2 / (n * sizes.double())).sqrt()
    assert (errors < 4 * floor + 0.01).all(), (errors, floor)
    mean_error = (out.u.mean(0) - oracle.m).abs() / oracle.w.sqrt()
    assert mean_error.max() < 5 / math.sqrt(n)


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("basis", ["identity", "haar", "fourier", "pca"])
def test_blurring_needs_the_dct_basis(basis):
    with pytest.raises(ConfigError) as err:
        validate({"process": {"basis": {"type": basis}, "schedule": {"type": "blurring"}}})
    assert str(err.value) == (
        "process.schedule.type: blurring needs process.basis.type: dct (its frequencies), "
        f"got {basis}"
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"interpolated": True}, "interpolated: true needs shift_resolution"),
        ({"interpolate_to": 128}, "interpolate_to applies to interpolated: true only"),
        (
            {"shift_resolution": 32, "interpolated": True},
            "interpolate_to >= base_resolution=64",
        ),
        ({"shift_resolution": 0}, "greater than or equal to 1"),
    ],
)
def test_shifted_cosine_config_errors(schedule, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate({"process": {"schedule": {"type": "vp-cosine", **schedule}}})
    assert "\n" not in str(err.value) and str(err.value).startswith("process.schedule")


def test_packaged_configs_differ_from_the_uniform_baseline_in_the_process_only():
    uniform = load_config(ROOT / "configs" / "mnist32_uniform.yaml")
    for name, kind in (("mnist32_blurring", BlurringDiffusion), ("mnist32_shifted", VPCosine)):
        cfg = load_config(name)
        for section in ("data", "model", "loss", "train", "sample"):
            assert getattr(cfg, section) == getattr(uniform, section), (name, section)
        process = build_linear_process(cfg)
        assert type(process.schedule) is kind
    shifted = build_linear_process(load_config("mnist32_shifted")).schedule
    assert shifted.shift == pytest.approx(2 * math.log(2))
