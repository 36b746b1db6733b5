"""Probability-flow ODE samplers: Euler and Heun in EDM's variables, and adaptive dopri5.

EDM (Karras et al. 2022) writes the PF-ODE of ``u = alpha (x0 + sigma~ eps)`` in ``x~ = u /
alpha`` against ``sigma~ = sigma / alpha``: ``dx~ / dsigma~ = (x~ - x0) / sigma~``. Here every
component has its own ``sigma~_i(t)``, and each steps in its own variable between the grid's
times, so for a scalar schedule these are EDM's (and k-diffusion's) Euler and Heun on the
same sigmas. The Euler step is then DDIM; Heun corrects it with the trapezoidal rule, which in
the components reads ``u_s = u'_s + alpha_s / 2 (e^h - 1) (x0(u'_s, s) - x0(u_t, t))`` with
``h = psi_s - psi_t`` the step in half log-SNR (``docs/samplers.md`` derives it).

``variable="t"`` steps in the schedule's time instead (``du/dt`` from the process's SDE),
which equals the above only where ``sigma~`` is linear in ``t``.
"""

from __future__ import annotations

import torch

from nudiff.process import Process
from nudiff.samplers.base import check_grid, emit, steps_iter
from nudiff.samplers.exponential import _coefficients, first_order_step

VARIABLES = ("sigma", "t")


def _velocity(model, process: Process, u, t):
    x0 = model(u, t)
    return process.pf_ode_velocity(u, t.view(1), x0), x0


def _check_variable(variable: str) -> None:
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {', '.join(VARIABLES)}, got {variable!r}")


def _euler_sigma(process: Process, u, x0, t, s):
    """One Euler step in ``(sigma~, x~)`` per component (DDIM) and the step's ``h``, ``alpha_s``."""
    alpha_s, sigma_s, _, sigma_t, h = _coefficients(process, t, s, u)
    return first_order_step(u, x0, alpha_s, sigma_s, sigma_t, h), h, alpha_s


@torch.inference_mode()
def sample_euler(
    model,
    process: Process,
    u,
    ts,
    *,
    noise=None,
    callback=None,
    progress=False,
    denoise_final=True,
    variable: str = "sigma",
):
    """Euler on the PF-ODE, 1 NFE per step: in EDM's ``(sigma~, x~)`` per component
    (``variable="sigma"``, equal to deterministic DDIM) or in the schedule's time ``t``."""
    _check_variable(variable)
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "euler")):
        if variable == "sigma":
            x0 = model(u, t)
            u = _euler_sigma(process, u, x0, t, s)[0]
        else:
            d, x0 = _velocity(model, process, u, t)
            u = u + (s - t) * d
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u


@torch.inference_mode()
def sample_heun(
    model,
    process: Process,
    u,
    ts,
    *,
    noise=None,
    callback=None,
    progress=False,
    denoise_final=True,
    variable: str = "sigma",
):
    """Heun's method (EDM's 2nd-order sampler), 2 NFE per step: in EDM's ``(sigma~, x~)`` per
    component (``variable="sigma"``) or in the schedule's time ``t``. A component whose step
    starts from pure noise (``alpha_t = 0``) or ends without noise (``sigma_s = 0``) has no
    finite trapezoid in ``sigma~`` and takes the Euler step, as EDM does on its last step."""
    _check_variable(variable)
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "heun")):
        if variable == "sigma":
            x0 = model(u, t)
            pred, h, alpha_s = _euler_sigma(process, u, x0, t, s)
            # the trapezoid's correction alpha_s / 2 (e^h - 1) (x0' - x0); 0 for a frozen one
            c = torch.where(torch.isfinite(h), alpha_s * torch.expm1(h) / 2, 0.0)
            u = pred + c.to(u) * (model(pred, s) - x0)
        else:
            d, x0 = _velocity(model, process, u, t)
            pred = u + (s - t) * d
            d2, _ = _velocity(model, process, pred, s)
            u = u + (s - t) * 0.5 * (d + d2)
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u


@torch.inference_mode()
def sample_dopri5(
    model,
    process: Process,
    u,
    ts,
    *,
    noise=None,
    callback=None,
    progress=False,
    denoise_final=True,
    rtol: float = 1e-4,
    atol: float = 1e-4,
):
    """Adaptive Dormand-Prince 5(4) on the PF-ODE through torchdiffeq, from ``ts[0]`` to
    ``ts[-1]`` (the interior of ``ts`` is ignored). The solver restarts at the schedule's
    breakpoints, where the velocity has kinks. NFE is whatever the tolerances need."""

    def velocity(t, x):
        return _velocity(model, process, x, t)[0]

    return integrate_dopri5(
        velocity, model, process, u, ts, callback, denoise_final, rtol=rtol, atol=atol
    )


def integrate_dopri5(
    velocity, model, process: Process, u, ts, callback, denoise_final, rtol, atol
) -> torch.Tensor:
    """dopri5 on ``du/dt = velocity(t, u)`` from ``ts[0]`` to ``ts[-1]``, restarting at the
    schedule's breakpoints; :func:`sample_dopri5`'s integrator, shared with the NDM's ODE."""
    from torchdiffeq import odeint

    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol} and {atol}")
    ts = check_grid(ts).to(u)
    t0, t1 = ts[0], ts[-1]
    jumps = [b for b in process.schedule.breakpoints() if float(t1) < b < float(t0)]
    span = torch.stack([t0, t1])
    # step_t = t1: the last step ends on t1 instead of stepping past it and interpolating, so
    # the model is never evaluated beyond the grid (a multi-scale model's segment end)
    options = {"step_t": t1.reshape(1)}
    if jumps:
        options["jump_t"] = torch.tensor(jumps, dtype=u.dtype, device=u.device)
    u = odeint(velocity, u, span, rtol=rtol, atol=atol, method="dopri5", options=options)[-1]
    emit(callback, 0, t1, u, None)
    return model(u, t1) if denoise_final else u
