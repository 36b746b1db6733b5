"""Samplers against the exact Gaussian oracle: transport maps, variances, orders, NFE, seeds."""

import math

import numpy as np
import pytest
import torch

from nudiff.bases import DCT, Haar
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.samplers import (
    SAMPLERS,
    NoiseSource,
    make_grid,
    nfe_per_step,
    sample,
    sampler_options,
    steps_for_nfe,
)
from nudiff.samplers.grids import progress
from nudiff.samplers.sde import langevin_step
from nudiff.schedules import EDM, MultiSpeed, SoftConditioning, VPCosine

SHAPE = (1, 8, 8)
DETERMINISTIC = ["euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "unipc", "dopri5"]
STOCHASTIC = ["ancestral", "euler-maruyama", "pc"]


def _problem(name):
    if name == "vp-cosine":
        basis, schedule = DCT(SHAPE), VPCosine()
    elif name == "multispeed":
        basis = Haar(SHAPE, 2)
        schedule = MultiSpeed(basis.level_map() - 1)
    elif name == "soft":
        basis = DCT(SHAPE)
        schedule = SoftConditioning(basis.label(), softness=0.5)
    elif name == "soft-clipped":
        basis = DCT(SHAPE)
        schedule = SoftConditioning(basis.label(), softness=0.5, clip=True)
    process = Process(basis, schedule).double()
    return process, GaussianOracle(process, field_model(SHAPE, basis=basis))


PROBLEMS = {name: _problem(name) for name in ("vp-cosine", "multispeed", "soft", "soft-clipped")}
SCHEDULES = ["vp-cosine", "multispeed", "soft"]


def _reference(process, oracle, n, seed=0):
    """Exact result of a deterministic sampler from the same prior noise: PF-ODE transport
    from t = 1 to t_min, then the final denoising."""
    z = NoiseSource(seed, 0, n).randn(process.shape, torch.float64)
    u1 = z * process.prior_variance().double()[0].sqrt()
    t1, t0 = torch.ones(1, dtype=torch.float64), torch.full((1,), process.t_min).double()
    return oracle(oracle.transport(u1, t1, t0), t0)


def _transport_error(process, oracle, out, ref):
    """Max over components of |sample std / exact std - 1| (no Monte-Carlo noise: same z)."""
    return ((out.u - ref).pow(2).mean(0).sqrt() / ref.std(0)).max().item()


@pytest.mark.parametrize("schedule", [*SCHEDULES, "soft-clipped"])
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_exact_transport(schedule, name):
    process, oracle = PROBLEMS[schedule]
    ref = _reference(process, oracle, 256)
    steps = {"euler": 2000, "ddim": 1000, "heun": 200, "dopri5": 1}.get(name, 200)
    options = {"rtol": 1e-7, "atol": 1e-7} if name == "dopri5" else {}
    out = sample(
        oracle, process, 256, sampler=name, steps=steps, options=options, dtype=torch.float64
    )
    tol = {"euler": 2e-2, "ddim": 2e-2}.get(name, 2e-3)
    assert _transport_error(process, oracle, out, ref) < tol


def _group_errors(process, oracle, u):
    index, names = process.basis.groups()
    ratio = u.var(0) / oracle.w
    sizes = torch.bincount(index.flatten())
    errors = torch.stack([ratio[index == g].mean() - 1 for g in range(len(names))]).abs()
    return errors, sizes


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_reproduces_the_data_variance(schedule, name):
    """Per basis group, |mean sample variance / true variance - 1| within 4 standard errors of
    the Monte-Carlo floor ``sqrt(2 / (n * group size))``, plus a 1% discretisation allowance."""
    process, oracle = PROBLEMS[schedule]
    n = 4000
    first_order = ("ancestral", "euler-maruyama", "euler", "ddim")
    steps = 1000 if name in first_order or name == "pc" else 200
    options = {"rtol": 1e-6, "atol": 1e-6} if name == "dopri5" else {}
    out = sample(
        oracle,
        process,
        n,
        sampler=name,
        steps=steps,
        seed=1,
        options=options,
        dtype=torch.float64,
    )
    errors, sizes = _group_errors(process, oracle, out.u)
    floor = (2 / (n * sizes.double())).sqrt()
    assert (errors < 4 * floor + 0.01).all(), (errors, floor)
    mean_error = (out.u.mean(0) - oracle.m).abs() / oracle.w.sqrt()
    assert mean_error.max() < 5 / math.sqrt(n)


def _order(name, steps=(24, 48, 96), options=None):
    """Observed orders from t = 1 to t = 0.5 on grids uniform in log-SNR (VP cosine).

    (Measured mid-way: at t_min the solution's derivatives decay so fast that some methods
    show a higher, superconvergent order there, e.g. Euler 2 and 3M 4.)"""
    process, oracle = PROBLEMS["vp-cosine"]
    schedule = process.schedule
    z = NoiseSource(0, 0, 64).randn(process.shape, torch.float64)
    t1, t_half = torch.ones(1, dtype=torch.float64), torch.full((1,), 0.5, dtype=torch.float64)
    ref = oracle.transport(z, t1, t_half)
    errors = []
    for n in steps:
        lam = torch.linspace(schedule.log_snr(t1).item(), schedule.log_snr(t_half).item(), n + 1)
        ts = schedule.t_from_log_snr(lam.double())
        u = SAMPLERS[name](oracle, process, z, ts, denoise_final=False, **(options or {}))
        errors.append((u - ref).pow(2).mean().sqrt().item())
    return [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]


ORDERS = [
    ("euler", {}, 1),
    ("euler", {"variable": "t"}, 1),
    ("ddim", {}, 1),
    ("heun", {}, 2),
    ("heun", {"variable": "t"}, 2),
    ("dpmpp-2m", {}, 2),
    ("dpmpp-3m", {}, 3),
    # UniPC-p: the predictor has order p, the corrector raises it by one
    ("unipc", {"order": 1}, 2),
    ("unipc", {"order": 2}, 3),
    ("unipc", {"order": 3}, 4),
    ("unipc", {"order": 3, "variant": "bh1"}, 4),
    ("unipc", {"order": 3, "corrector": False}, 3),
]


@pytest.mark.parametrize(("name", "options", "order"), ORDERS)
def test_convergence_order_on_the_oracle(name, options, order):
    """Halving the step size divides the error by ~2^order (measured over two halvings)."""
    observed = _order(name, options=options)
    assert all(abs(o - order) < 0.3 for o in observed), observed


def test_damped_3m_is_second_order():
    """k-diffusion's damped 3M halves the quadratic term: its order falls towards 2."""
    observed = _order("dpmpp-3m", steps=(24, 48, 96, 192), options={"form": "damped"})
    assert observed[-1] < 2.6 and all(o > 1.9 for o in observed), observed


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_is_counted_exactly(name):
    process, oracle = PROBLEMS["multispeed"]
    calls = []

    def counted(u, t):
        calls.append(u.shape[0])
        return oracle(u, t)

    out = sample(counted, process, 8, sampler=name, steps=7, dtype=torch.float64)
    assert out.nfe == len(calls)
    if name != "dopri5":
        assert out.nfe == 7 * nfe_per_step(name) + 1
    assert steps_for_nfe("heun", 21) == 10 and steps_for_nfe("dpmpp-2m", 20) == 19


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_batch_invariance_and_determinism(name):
    process, oracle = PROBLEMS["multispeed"]
    kw = {"sampler": name, "steps": 10, "seed": 5, "dtype": torch.float64}
    a = sample(oracle, process, 6, **kw)
    b = sample(oracle, process, 6, **kw)
    c = sample(oracle, process, 2, start=4, **kw)
    d = sample(oracle, process, 6, **{**kw, "seed": 6})
    assert torch.equal(a.u, b.u)
    # dopri5 adapts one step size to the whole batch: invariant only to its tolerance
    tol = 1e-3 if name == "dopri5" else 1e-12
    torch.testing.assert_close(a.u[4:], c.u, rtol=tol, atol=tol)
    assert not torch.allclose(a.u, d.u)


def test_ddim_with_eta_one_is_ancestral_sampling():
    process, oracle = PROBLEMS["multispeed"]
    a = sample(oracle, process, 16, sampler="ancestral", steps=12, dtype=torch.float64)
    b = sample(
        oracle, process, 16, sampler="ddim", steps=12, options={"eta": 1.0}, dtype=torch.float64
    )
    torch.testing.assert_close(a.u, b.u, rtol=1e-10, atol=1e-10)


def test_first_step_of_the_2m_sde_solver_is_the_ancestral_step():
    """Without history the SDE exponential integrator is the per-component DDPM posterior."""
    process, oracle = PROBLEMS["multispeed"]
    ts = torch.tensor([1.0, 0.5], dtype=torch.float64)
    kw = {"ts": ts, "seed": 3, "dtype": torch.float64}
    a = sample(oracle, process, 16, sampler="ancestral", **kw)
    b = sample(oracle, process, 16, sampler="dpmpp-2m-sde", **kw)
    torch.testing.assert_close(a.u, b.u, rtol=1e-10, atol=1e-10)


def test_langevin_corrector_converges_to_the_marginal():
    """Started far from it (variance 4 instead of the marginal's), Langevin steps at a fixed t
    reach the exact marginal variance of every component."""
    process, oracle = PROBLEMS["soft"]
    t = torch.tensor([0.7], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 4000
    u = 2 * torch.randn((n, *SHAPE), generator=g, dtype=torch.float64)
    for _ in range(1500):
        noise = torch.randn(u.shape, generator=g, dtype=torch.float64)
        u = langevin_step(process, u, oracle(u, t), t, 0.1, noise)
    mean, var = oracle.marginal(t)
    ratio = u.var(0) / var[0]
    index, names = process.basis.groups()
    for k in range(len(names)):
        sel = ratio[index == k]
        assert abs(sel.mean() - 1) < 5 * (2 / (n * sel.numel())) ** 0.5 + 0.02, names[k]


# ---------------------------------------------------------------------------------- grids
def test_grids_run_from_one_to_t_min_and_decrease():
    for process, _ in PROBLEMS.values():
        for kind in ("auto", "uniform", "log-snr", "edm"):
            ts = make_grid(process, 17, kind)
            assert ts.dtype == torch.float64 and ts.shape == (18,)
            assert ts[0] == 1.0 and ts[-1] == process.t_min
            assert (ts[1:] < ts[:-1]).all()


def test_log_snr_grid_is_uniform_in_the_reference_log_snr():
    process, _ = PROBLEMS["vp-cosine"]
    lam = process.log_snr(make_grid(process, 10, "log-snr")).flatten()
    torch.testing.assert_close(lam.diff(), torch.full((10,), 3.0, dtype=torch.float64))
    # for a scalar schedule the automatic grid is the log-SNR grid
    torch.testing.assert_close(make_grid(process, 10, "auto"), make_grid(process, 10, "log-snr"))


def test_edm_grid_is_edms_rho_schedule():
    schedule = EDM(sigma_min=0.002, sigma_max=80.0)
    process = Process(DCT(SHAPE), schedule).double()
    ts = make_grid(process, 8, "edm", rho=7.0)
    _, sigma = process.coefficients(ts)
    i = torch.arange(9, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 8 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sigma.flatten(), expected, rtol=1e-6, atol=0)


def test_auto_grid_follows_the_fast_bands_and_budgets_split_intervals():
    process, _ = PROBLEMS["multispeed"]  # bands finish at 1/3, 2/3, 1
    ts = make_grid(process, 30, "auto")
    # three bands move on [0, 1/3], two on [1/3, 2/3], one on [2/3, 1], each through the same
    # log-SNR range in its own window: rates 3, 1.5 and 1 (x 20): p = 3 norms of the rates give
    # step densities in the ratio (3^3 + 1.5^3 + 1)^(1/3) : (1.5^3 + 1)^(1/3) : 1 (equal group
    # weights, a group per band; the detail bands of Haar level 1 and 2 and the approximation)
    counts = np.histogram(ts.numpy(), bins=[0, 1 / 3, 2 / 3, 1.0])[0]
    assert counts[0] > counts[1] > counts[2]
    budgets = [3, 5, 7]  # t = 1 downwards
    ts = make_grid(process, kind="uniform", budgets=budgets)
    assert ts.shape == (16,)
    for k, (hi, lo) in enumerate([(1, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0)]):
        inside = ((ts >= lo - 1e-12) & (ts <= hi + 1e-12)).sum().item()
        assert inside == budgets[k] + 1
    torch.testing.assert_close(
        ts[:4], torch.linspace(1, 2 / 3, 4, dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_progress_is_strictly_increasing_where_nothing_moves():
    process, _ = PROBLEMS["multispeed"]
    t = np.linspace(0, 1, 101)
    p = progress(process, t, "log-snr", reference=0)  # the approximation band: moves everywhere
    assert (np.diff(p) > 0).all()
    finest = int((process.schedule.end.flatten() < 0.5).nonzero()[0])
    p = progress(process, t, "log-snr", reference=finest)  # frozen after 1/3: tiny slope there
    assert (np.diff(p) > 0).all() and p[-1] - p[40] < 1e-4 * (p[30] - p[0])


# ------------------------------------------------------------------------------ bad input
def test_bad_arguments_are_clear_errors():
    process, oracle = PROBLEMS["multispeed"]
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(oracle, process, 2, sampler="nope")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(oracle, process, 2, steps=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(oracle, process, 2, ts=torch.tensor([0.1, 0.5, 1.0]))
    with pytest.raises(ValueError, match="grid must be one of"):
        sample(oracle, process, 2, grid="cosine")
    with pytest.raises(ValueError, match="unknown option"):
        sample(oracle, process, 2, sampler="heun", options={"eta": 1.0})
    with pytest.raises(ValueError, match="one budget per interval"):
        make_grid(process, kind="auto", budgets=[3, 3])
    with pytest.raises(ValueError, match="must equal the sum"):
        make_grid(process, 10, budgets=[3, 3, 3])
    with pytest.raises(ValueError, match="reference must be"):
        make_grid(process, 10, "log-snr", reference=64)
    with pytest.raises(ValueError, match="at least 3 NFE"):
        steps_for_nfe("heun", 2)
    assert sampler_options("ddim") == {"eta": 0.0}
    assert sampler_options("pc") == {"corrector_steps": 1, "snr": 0.1}


@pytest.mark.parametrize("schedule", ["multispeed", "soft", "soft-clipped"])
def test_auto_density_on_schedule_classes_equals_the_per_component_formula(schedule):
    """The grid's density is computed on one component per class of identical schedules; it
    must equal the direct per-component formula."""
    from nudiff.samplers.grids import LAMBDA_CLIP, _auto_density

    process, _ = PROBLEMS[schedule]
    t = np.linspace(process.t_min, 1.0, 57)
    times = torch.as_tensor(t)
    alpha, sigma = process.coefficients(times)
    dalpha, dsigma = process.derivatives(times)
    lam = 2 * (alpha.log() - sigma.log())
    rate = (2 * (dalpha / alpha - dsigma / sigma)).abs()
    rate = torch.where(lam.abs() <= LAMBDA_CLIP, rate, 0.0).nan_to_num(0.0, 0.0, 0.0) ** 3
    index, names = process.basis.groups()
    flat = rate.flatten(1)
    per_group = torch.stack([flat[:, index.flatten() == g].mean(1) for g in range(len(names))], 1)
    expected = per_group.mean(1) ** (1 / 3)
    np.testing.assert_allclose(_auto_density(process, t, 3.0), expected.numpy(), rtol=1e-10)
    first, inverse = process.schedule.classes()
    assert len(first) < math.prod(process.shape) or schedule != "multispeed"
    sub = process.schedule.restrict(first)
    full = process.schedule.log_snr(times).flatten(1)
    torch.testing.assert_close(sub.log_snr(times).flatten(1)[:, inverse], full)
