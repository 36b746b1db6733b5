"""Stochastic samplers: ancestral (DDPM posterior, per component) and Euler-Maruyama."""

from __future__ import annotations

import torch

from nudiff.process import Process
from nudiff.samplers.base import NoiseSource, check_grid, emit, posterior_variance, steps_iter


def ancestral_step(process: Process, u, x0, t, s, noise: torch.Tensor | None):
    """Draw ``u_s ~ q(u_s | u_t, u_0 = x0)`` per component (the DDPM posterior).

    With ``a = alpha_t / alpha_s`` and ``r^2 = sigma_t^2 - a^2 sigma_s^2`` the forward
    transition's variance: mean ``a sigma_s^2 / sigma_t^2 u + alpha_s r^2 / sigma_t^2 x0``, variance
    ``r^2 sigma_s^2 / sigma_t^2``. A frozen component (r = 0, a = 1) stays where it is.
    """
    alpha_t, sigma_t = process.coefficients(t.view(1), u)
    alpha_s, sigma_s = process.coefficients(s.view(1), u)
    r2, var = posterior_variance(alpha_t, sigma_t, alpha_s, sigma_s)
    mean = (alpha_t / alpha_s * sigma_s**2 / sigma_t**2) * u + (alpha_s * r2 / sigma_t**2) * x0
    if noise is None:
        return mean
    return mean + var.sqrt() * noise


@torch.inference_mode()
def sample_ancestral(
    model,
    process: Process,
    u,
    ts,
    *,
    noise: NoiseSource | None = None,
    callback=None,
    progress=False,
    denoise_final=True,
):
    """Ancestral sampling with the per-component posterior; returns (B, C, H, W) components."""
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "ancestral")):
        x0 = model(u, t)
        eps = noise.randn(u.shape[1:], u.dtype) if noise is not None else None
        u = ancestral_step(process, u, x0, t, s, eps)
        emit(callback, i, t, u, x0)
    out = model(u, ts[-1]) if denoise_final else u
    return out


@torch.inference_mode()
def sample_euler_maruyama(
    model,
    process: Process,
    u,
    ts,
    *,
    noise: NoiseSource | None = None,
    callback=None,
    progress=False,
    denoise_final=True,
):
    """Euler-Maruyama on the reverse SDE ``du = (f u - g^2 score) dt + g dw``."""
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "euler-maruyama")):
        x0 = model(u, t)
        score = process.score_from_x0(u, t.view(1), x0)
        dt = t - s
        _, g2 = process.sde(t.view(1), u)
        u = u - dt * process.reverse_sde_drift(u, t.view(1), score)
        if noise is not None:
            u = u + (g2 * dt).sqrt() * noise.randn(u.shape[1:], u.dtype)
        emit(callback, i, t, u, x0)
    out = model(u, ts[-1]) if denoise_final else u
    return out


def langevin_step(process: Process, u, x0, t, snr: float, noise: torch.Tensor):
    """One Langevin MCMC step targeting the marginal at ``t``, preconditioned per component by
    ``sigma_t^2``: step ``eps_i = 2 (snr sigma_i)^2``, ``u += eps score + sqrt(2 eps) z``.

    The preconditioner is constant in ``u``, so the step leaves the marginal invariant as the
    step shrinks, whatever the per-component schedule; ``eps score = 2 snr^2 (alpha x0 - u)``
    stays finite as ``sigma -> 0``.
    """
    alpha, sigma = process.coefficients(t.view(1), u)
    step = 2 * snr**2 * sigma**2
    return u + 2 * snr**2 * (alpha * x0 - u) + (2 * step).sqrt() * noise


@torch.inference_mode()
def sample_pc(
    model,
    process: Process,
    u,
    ts,
    *,
    noise: NoiseSource | None = None,
    callback=None,
    progress=False,
    denoise_final=True,
    corrector_steps: int = 1,
    snr: float = 0.1,
):
    """Predictor-corrector (Song et al. 2021): at each grid time ``corrector_steps`` Langevin
    corrector steps at ``t``, then an ancestral predictor step to the next time. NFE per step:
    ``1 + corrector_steps``."""
    if noise is None:
        raise ValueError("the pc sampler is stochastic: it needs a noise source")
    if corrector_steps < 0 or not snr > 0:
        raise ValueError(f"need corrector_steps >= 0 and snr > 0, got {corrector_steps} and {snr}")
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "pc")):
        for _ in range(corrector_steps):
            x0 = model(u, t)
            u = langevin_step(process, u, x0, t, snr, noise.randn(u.shape[1:], u.dtype))
        x0 = model(u, t)
        u = ancestral_step(process, u, x0, t, s, noise.randn(u.shape[1:], u.dtype))
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u
