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
