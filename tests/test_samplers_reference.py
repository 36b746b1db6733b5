"""The samplers against reference algorithms written out here for one noise level (EDM's and
k-diffusion's Euler, Heun and DPM-Solver++ 3M, UniPC as its paper and diffusers state it), on
the exact Gaussian oracle with the same sigmas, start and noise: a per-component sampler on a
scalar schedule must be the scalar algorithm, to rounding."""

import pytest
import torch

from nudiff.bases import DCT, Haar
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.samplers import SAMPLERS, NoiseSource, make_grid
from nudiff.samplers.surrogate import exact_map, map_error, sampler_map
from nudiff.schedules import EDM, VE, MultiSpeed, VPCosine

SHAPE = (1, 8, 8)


def _setup(schedule, dtype, steps=10):
    basis = DCT(SHAPE)
    process = Process(basis, schedule).to(dtype)
    oracle = GaussianOracle(process, field_model(SHAPE, basis=basis)).to(dtype)
    ts = make_grid(process, steps, "auto").to(dtype)
    like = torch.zeros(1, dtype=dtype)
    alpha, sigma = (c.flatten() for c in process.coefficients(ts, like.expand(len(ts))))
    z = NoiseSource(3, 0, 16).randn(SHAPE, dtype)
    u = z * process.prior_variance().to(dtype)[0].sqrt()
    return process, oracle, ts, alpha, sigma, u


# ---------------------------------------------------------------- k-diffusion's algorithms
def kdiff_euler(den, x, sigmas):
    for i in range(len(sigmas) - 1):
        d = (x - den(x, i)) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def kdiff_heun(den, x, sigmas):
    for i in range(len(sigmas) - 1):
        d = (x - den(x, i)) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        x2 = x + d * dt
        d2 = (x2 - den(x2, i + 1)) / sigmas[i + 1]
        x = x + (d + d2) / 2 * dt
    return x


def kdiff_dpmpp_3m_sde(den, x, sigmas, eta=0.0, noises=None):
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = den(x, i)
        h = torch.log(sigmas[i]) - torch.log(sigmas[i + 1])
        h_eta = h * (eta + 1)
        x = torch.exp(-h_eta) * x - torch.expm1(-h_eta) * denoised
        phi_2 = torch.expm1(-h_eta) / h_eta + 1
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:
            x = x + phi_2 * (denoised - d_1) / (h_1 / h)
        if eta:
            x = x + noises[i] * sigmas[i + 1] * (-torch.expm1(-2 * h * eta)).sqrt()
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
    return x


@pytest.mark.parametrize("schedule", [EDM(), VE(sigma_min=0.01, sigma_max=50.0)])
@pytest.mark.parametrize("name", ["euler", "heun"])
def test_euler_and_heun_are_edms_on_the_same_sigmas(schedule, name):
    """float32, EDM(rho = 7) and VE: within float32 rounding of k-diffusion's algorithm."""
    process, oracle, ts, _, sigma, u = _setup(schedule, torch.float32)
    ours = SAMPLERS[name](oracle, process, u, ts, denoise_final=False)
    reference = {"euler": kdiff_euler, "heun": kdiff_heun}[name]
    ref = reference(lambda x, i: oracle(x, ts[i : i + 1]), u, sigma)
    scale = ref.abs().max()
    assert (ours - ref).abs().max() / scale < 2e-5
    # the old stepping in t is far from it on this schedule
    old = SAMPLERS[name](oracle, process, u, ts, denoise_final=False, variable="t")
    assert (old - ref).abs().max() / scale > 1e-2


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_damped_3m_is_k_diffusions_3m(eta):
    process, oracle, ts, _, sigma, u = _setup(EDM(), torch.float64, steps=12)
    noises = [
        torch.randn(u.shape, generator=torch.Generator().manual_seed(i)).double() for i in range(12)
    ]

    class Replay:  # the same noise, step by step
        def __init__(self):
            self.k = 0

        def randn(self, shape, dtype):
            self.k += 1
            return noises[self.k - 1]

    name = "dpmpp-3m-sde" if eta else "dpmpp-3m"
    noise = Replay() if eta else None
    ours = SAMPLERS[name](oracle, process, u, ts, noise=noise, denoise_final=False, form="damped")
    ref = kdiff_dpmpp_3m_sde(lambda x, i: oracle(x, ts[i : i + 1]), u, sigma, eta, noises)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------- UniPC
def unipc_reference(den, x, alpha, sigma, order, variant, lower_order_final=True):
    """UniPC-p with UniC in data prediction for one noise level, with R rho = b solved by
    torch.linalg.solve (the per-component sampler uses closed-form weights)."""
    lam = torch.log(alpha) - torch.log(sigma)
    n = len(lam) - 1
    outs, x_last, step_order = [], None, None

    def update(x, i, p, m_new=None):
        h = lam[i + 1] - lam[i]
        hh = -h
        h_phi_1 = torch.expm1(hh)
        b_h = hh if variant == "bh1" else h_phi_1
        rks, d1s = [], []
        for k in range(1, p):
            rk = (lam[i - k] - lam[i]) / h
            rks.append(rk)
            d1s.append((outs[i - k] - outs[i]) / rk)
        rks.append(torch.ones_like(h))
        rks = torch.stack(rks)
        h_phi_k, fac, rows, b = h_phi_1 / hh - 1, 1, [], []
        for j in range(1, p + 1):
            rows.append(rks ** (j - 1))
            b.append(h_phi_k * fac / b_h)
            fac *= j + 1
            h_phi_k = h_phi_k / hh - 1 / fac
        R, b = torch.stack(rows), torch.stack(b)
        x_t = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * h_phi_1 * outs[i]
        res = torch.zeros_like(x)
        if m_new is None:
            if p == 2:
                rhos = torch.tensor([0.5], dtype=x.dtype)
            elif p > 2:
                rhos = torch.linalg.solve(R[:-1, :-1], b[:-1])
            for r, d in zip(rhos if p > 1 else [], d1s, strict=True):
                res = res + r * d
        else:
            rhos = torch.tensor([0.5], dtype=x.dtype) if p == 1 else torch.linalg.solve(R, b)
            for r, d in zip(rhos[:-1], d1s, strict=True):
                res = res + r * d
            res = res + rhos[-1] * (m_new - outs[i])
        return x_t - alpha[i + 1] * b_h * res

    for i in range(n):
        m = den(x, i)
        if x_last is not None:
            outs.append(m)
            x = update(x_last, i - 1, step_order, m)
            outs.pop()
        outs.append(m)
        p = min(order, i + 1)
        if lower_order_final and n < 15:
            p = min(p, n - i)
        x_last, step_order = x, p
        x = update(x, i, p)
    return x


@pytest.mark.parametrize("schedule", [VPCosine(), EDM()])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_is_the_scalar_algorithm(schedule, order, variant):
    process, oracle, ts, alpha, sigma, u = _setup(schedule, torch.float64, steps=9)
    ours = SAMPLERS["unipc"](
        oracle, process, u, ts, denoise_final=False, order=order, variant=variant
    )
    ref = unipc_reference(lambda x, i: oracle(x, ts[i : i + 1]), u, alpha, sigma, order, variant)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_unipc_handles_components_that_wait_or_start_from_noise():
    """Multi-speed Haar bands are frozen outside their windows and start from alpha = 0: no
    NaN, and the map is close to the exact flow's at 40 NFE."""
    basis = Haar(SHAPE, 2)
    process = Process(basis, MultiSpeed(basis.level_map() - 1)).double()
    oracle = GaussianOracle(process, field_model(SHAPE, basis=basis))
    for steps in (9, 39):
        ts = make_grid(process, steps, "auto").double()
        g, c = sampler_map(SAMPLERS["unipc"], oracle, process, ts)
        assert torch.isfinite(g).all() and torch.isfinite(c).all()
    assert map_error(SAMPLERS["unipc"], oracle, process, ts) < 5e-3


def test_the_exact_map_is_the_exact_transport():
    """``exact_map`` (closed form) equals the oracle's transport followed by its denoiser,
    and a fine sampler's map converges to it."""
    basis = DCT(SHAPE)
    process = Process(basis, VPCosine()).double()
    oracle = GaussianOracle(process, field_model(SHAPE, basis=basis))
    ts = make_grid(process, 400, "auto").double()
    g, c = exact_map(oracle, process, ts)
    u1 = torch.randn(3, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t1, t0 = ts[:1], ts[-1:]
    torch.testing.assert_close(g * u1 + c, oracle(oracle.transport(u1, t1, t0), t0))
    assert map_error(SAMPLERS["unipc"], oracle, process, ts) < 1e-6
    assert map_error(SAMPLERS["dpmpp-3m"], oracle, process, ts) < 1e-5
    coarse = make_grid(process, 3, "auto").double()
    assert map_error(SAMPLERS["ddim"], oracle, process, coarse) > 0.1
