"""NDM samplers: a DDIM-type step with ``F(x_hat, .)`` at both ends, the ancestral step from the
NDM posterior, and the probability-flow ODE with adaptive dopri5.

With ``x_hat = D(z_t, t)`` and ``eps_hat = (z_t - alpha_t F(x_hat, t)) / sigma_t`` per
component, the step from ``t`` to ``s < t`` draws from the NDM posterior family
``q(z_s | z_t, x_hat)`` (:mod:`nudiff.ndm.bound`):

    z_s = alpha_s F(x_hat, s) + sqrt(sigma_s^2 - c^2) eps_hat + c xi,   xi ~ N(0, I),

``c = eta sqrt(v)`` with the DDPM posterior variance ``v``: ``eta = 0`` is deterministic (DDIM,
a first-order discretisation of the PF-ODE), ``eta = 1`` the ancestral step. With
``F = identity`` these are nudiff's ``ddim`` and ``ancestral`` samplers.

The PF-ODE substitutes ``x_hat`` into the conditional forward SDE's drift with half the score
term: ``dz/dt = alpha' F(x_hat, t) + alpha dF/dt(x_hat, t) + (sigma' / sigma)(z - alpha
F(x_hat, t))`` (``f + g^2 / (2 sigma^2) = sigma' / sigma``); with ``F = identity`` it is
:meth:`nudiff.process.Process.pf_ode_velocity`.
"""

from __future__ import annotations

import torch

from nudiff.process import Process
from nudiff.samplers.base import NoiseSource, check_grid, emit, posterior_variance, steps_iter
from nudiff.samplers.ode import integrate_dopri5


def ndm_velocity(denoiser, transform, process: Process, z: torch.Tensor, t) -> torch.Tensor:
    """The NDM PF-ODE velocity ``dz/dt`` at ``z`` ``(B, C, H, W)``, time ``t`` ``(1,)``."""
    x0 = denoiser(z, t)
    alpha, sigma = process.coefficients(t, z)
    dalpha, dsigma = process.derivatives(t, z)
    if transform.identity:
        return dalpha * x0 + dsigma * (z - alpha * x0) / sigma
    f, df = transform.with_time_derivative(x0, t)
    return dalpha * f + alpha * df + dsigma * (z - alpha * f) / sigma


@torch.inference_mode()
def sample_ndm_ddim(
    model,
    process: Process,
    u,
    ts,
    *,
    transform,
    noise: NoiseSource | None = None,
    callback=None,
    progress=False,
    denoise_final=True,
    eta: float = 0.0,
):
    """The DDIM-type NDM sampler (``eta = 0`` deterministic, ``eta = 1`` ancestral)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and noise is None:
        raise ValueError("ddim with eta > 0 needs a noise source")
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "ndm ddim")):
        x0 = model(u, t)
        alpha_t, sigma_t = process.coefficients(t.view(1), u)
        alpha_s, sigma_s = process.coefficients(s.view(1), u)
        c = eta * posterior_variance(alpha_t, sigma_t, alpha_s, sigma_s)[1].sqrt()
        f = transform(
            torch.cat([x0, x0]), torch.cat([t.view(1), s.view(1)]).repeat_interleave(len(u))
        )
        f_t, f_s = f.chunk(2)
        eps = (u - alpha_t * f_t) / sigma_t
        u = alpha_s * f_s + (sigma_s**2 - c**2).clamp_min(0).sqrt() * eps
        if eta > 0:
            u = u + c * noise.randn(u.shape[1:], u.dtype)
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u


def sample_ndm_ancestral(model, process: Process, u, ts, *, transform, noise=None, **kwargs):
    """Ancestral NDM sampling: :func:`sample_ndm_ddim` with ``eta = 1``."""
    if noise is None:
        raise ValueError("ancestral sampling needs a noise source")
    return sample_ndm_ddim(
        model, process, u, ts, transform=transform, noise=noise, eta=1.0, **kwargs
    )


@torch.no_grad()
def sample_ndm_dopri5(
    model,
    process: Process,
    u,
    ts,
    *,
    transform,
    noise=None,
    callback=None,
    progress=False,
    denoise_final=True,
    rtol: float = 1e-4,
    atol: float = 1e-4,
):
    """Adaptive Dormand-Prince 5(4) (torchdiffeq) on the NDM PF-ODE from ``ts[0]`` to
    ``ts[-1]``; ``dF/dt`` by forward-mode JVP at every evaluation (hence ``no_grad``, not
    inference mode)."""

    def velocity(t, z):
        return ndm_velocity(model, transform, process, z, t.reshape(1))

    return integrate_dopri5(
        velocity, model, process, u, ts, callback, denoise_final, rtol=rtol, atol=atol
    )


NDM_SAMPLERS = {
    "ddim": sample_ndm_ddim,
    "ancestral": sample_ndm_ancestral,
    "dopri5": sample_ndm_dopri5,
}
