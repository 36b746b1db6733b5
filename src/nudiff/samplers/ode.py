"""Probability-flow ODE samplers: Euler and Heun (EDM's 2nd order)."""

from __future__ import annotations

import torch

from nudiff.process import Process
from nudiff.samplers.base import check_grid, emit, steps_iter


def _velocity(model, process: Process, u, t):
    x0 = model(u, t)
    return process.pf_ode_velocity(u, t.view(1), x0), x0


@torch.inference_mode()
def sample_euler(
    model, process: Process, u, ts, *, noise=None, callback=None, progress=False, denoise_final=True
):
    """Euler on ``du/dt = alpha' x0 + sigma' (u - alpha x0) / sigma``."""
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "euler")):
        d, x0 = _velocity(model, process, u, t)
        u = u + (s - t) * d
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u


@torch.inference_mode()
def sample_heun(
    model, process: Process, u, ts, *, noise=None, callback=None, progress=False, denoise_final=True
):
    """Heun's method (trapezoidal corrector), 2 NFE per step."""
    ts = check_grid(ts).to(u)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "heun")):
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
