"""Time grids for sampling, from t = 1 (prior) down to the schedule's ``t_min``.

Every grid here is uniform in some *progress* ``P(t)``, a function that increases with t:

- ``uniform``: ``P = t``.
- ``log-snr``: ``P = -lambda_ref(t)``, the log-SNR of one reference component.
- ``edm``: ``P = sigma_ref(t)^(1/rho)`` with ``sigma = exp(-lambda_ref / 2)`` (EDM's rho grid).
- ``auto`` (the default): ``dP/dt = (mean_g mean_{i in g} |dlambda_i/dt|^p)^(1/p)``, with the
  groups ``g`` of the basis (Haar bands, frequency octaves). For a scalar schedule it is the
  ``log-snr`` grid; for per-component schedules it puts steps where components move in
  log-SNR: a band that traverses its whole range 4x faster than the others gets 4x the step
  density while it moves. ``p = 3`` balances the local errors ``~ h^3`` of second-order
  solvers over the components (the optimum of ``sum_i sum_k h_ik^3`` for a fixed step count).

Per-interval budgets (e.g. the scales of a multi-scale model, between finishing times) split the
steps between intervals ``[breaks_k, breaks_k+1]`` and space them by ``P`` inside each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nudiff.process import Process
from nudiff.schedules import ScalarSchedule
from nudiff.schedules.reference import LAMBDA_CLIP

GRIDS = ("auto", "uniform", "log-snr", "edm", "optimized")

# the fine grid on which P is tabulated and inverted; log-SNRs are clipped to +-LAMBDA_CLIP,
# beyond which a component is data (or noise) to float precision and needs no steps
FINE = 4097


def _fine_times(process: Process, t_max: float) -> np.ndarray:
    return np.linspace(process.t_min, t_max, FINE)


def _representatives(process: Process):
    """``(schedule, inverse)``: the schedule restricted to one component per class of identical
    schedules and each component's class ``(D,)``; ``inverse`` is None for scalar schedules."""
    schedule = process.schedule
    if schedule.shape is None:
        return schedule, None
    first, inverse = schedule.classes()
    return schedule.restrict(first), inverse


def _log_snr_table(process: Process, t: np.ndarray, reference: int) -> np.ndarray:
    """``lambda_ref(t)`` of flat component ``reference``, clipped, ``(T,)``."""
    size = math.prod(process.shape)
    if not 0 <= reference < size:
        raise ValueError(f"reference must be a component index in [0, {size}), got {reference}")
    schedule = process.schedule
    if schedule.shape is not None:
        schedule = schedule.restrict(torch.tensor([reference]))
    times = torch.as_tensor(t, dtype=torch.float64)
    lam = schedule.log_snr(times).double().flatten(1)[:, 0]
    return lam.clamp(-LAMBDA_CLIP, LAMBDA_CLIP).cpu().numpy()


def _auto_density(process: Process, t: np.ndarray, exponent: float) -> np.ndarray:
    """``(mean_g mean_{i in g} |dlambda_i/dt|^p)^(1/p)`` on times ``t`` ``(T,)``, computed on one
    component per class of identical schedules (a Haar band, a frequency shell), weighted by how
    many components of each group it stands for."""
    index, names = process.basis.groups()
    schedule, inverse = _representatives(process)
    device = process.prior.mean.device
    index = index.flatten().to(device)
    counts = torch.bincount(index, minlength=len(names)).double()
    if inverse is None:  # scalar: one class that every group consists of
        weights = torch.ones(1, len(names), dtype=torch.float64, device=device)
    else:
        inverse = inverse.to(device)
        weights = torch.zeros(
            int(inverse.max()) + 1, len(names), dtype=torch.float64, device=device
        )
        weights.index_put_((inverse, index), torch.ones_like(counts[index]), accumulate=True)
        weights /= counts
    out = []
    for chunk in torch.as_tensor(t, dtype=torch.float64).split(256):
        chunk = chunk.to(device)
        alpha, sigma = schedule.alpha_sigma(chunk)
        dalpha, dsigma = schedule.derivatives(chunk)
        lam = 2 * (torch.log(alpha) - torch.log(sigma))
        rate = (2 * (dalpha / alpha - dsigma / sigma)).abs().double()
        # outside [-clip, clip] a component is settled: it needs no steps
        rate = torch.where(lam.abs() <= LAMBDA_CLIP, rate, 0.0).nan_to_num(0.0, 0.0, 0.0)
        rate = rate.expand(len(chunk), weights.shape[0], 1, 1).flatten(1) ** exponent
        out.append(((rate @ weights).mean(1) ** (1 / exponent)).cpu())
    return torch.cat(out).numpy()


def progress(
    process: Process,
    t: np.ndarray,
    kind: str = "auto",
    *,
    reference: int = 0,
    rho: float = 7.0,
    exponent: float = 3.0,
) -> np.ndarray:
    """The progress ``P(t)`` of grid ``kind`` on increasing times ``t`` ``(T,)``, increasing,
    float64 (see the module docstring)."""
    if kind == "uniform":
        p = t.copy()
    elif kind == "log-snr":
        p = -_log_snr_table(process, t, reference)
    elif kind == "edm":
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        p = np.exp(-_log_snr_table(process, t, reference) / (2 * rho))
    elif kind == "auto":
        density = _auto_density(process, t, exponent)
        p = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(t))])
    else:
        raise ValueError(f"grid must be one of {list(GRIDS)}, got {kind!r}")
    # a floor of 1e-6 of the total slope keeps P strictly increasing where nothing moves, so
    # inverting it is well defined (such stretches get no steps unless a budget asks for them)
    span = p[-1] - p[0]
    return p + 1e-6 * (span if span > 0 else 1.0) * (t - t[0]) / (t[-1] - t[0])


def _closed_form(process: Process, kind: str, rho: float):
    """For a scalar schedule with a closed-form inverse, ``(P(t), P^-1)`` of the log-SNR
    based grids computed exactly (no tabulation); None otherwise."""
    schedule = process.schedule
    if kind not in ("auto", "log-snr", "edm") or not isinstance(schedule, ScalarSchedule):
        return None
    try:
        schedule.t_from_log_snr(torch.zeros(1, dtype=torch.float64))
    except NotImplementedError:
        return None

    def lam(t):
        times = torch.as_tensor(np.asarray(t, dtype=np.float64))
        return schedule.log_snr(times).flatten().clamp(-LAMBDA_CLIP, LAMBDA_CLIP).numpy()

    if kind == "edm":
        return (
            lambda t: np.exp(-lam(t) / (2 * rho)),
            lambda p: schedule.t_from_log_snr(torch.from_numpy(-2 * rho * np.log(p))).numpy(),
        )
    return (lambda t: -lam(t), lambda p: schedule.t_from_log_snr(torch.from_numpy(-p)).numpy())


def _uniform_in(forward, inverse, lo: float, hi: float, steps: int) -> np.ndarray:
    """``steps + 1`` times from ``hi`` down to ``lo``, uniform in the progress ``forward``."""
    p_lo, p_hi = forward(np.array([lo, hi]))
    out = inverse(np.linspace(p_hi, p_lo, steps + 1))
    out[0], out[-1] = hi, lo
    return out


def make_grid(
    process: Process,
    steps: int | None = None,
    kind: str = "auto",
    *,
    budgets: Sequence[int] | None = None,
    breaks: Sequence[float] | None = None,
    t_max: float = 1.0,
    reference: int = 0,
    rho: float = 7.0,
    exponent: float = 3.0,
) -> torch.Tensor:
    """A decreasing grid ``(steps + 1,)`` (float64) from ``t_max`` to ``process.t_min``.

    Args:
        steps: number of steps (grid intervals); with ``budgets`` it may be left out and must
            otherwise equal ``sum(budgets)``.
        kind: one of :data:`GRIDS`.
        budgets: steps per interval between ``breaks``, from t_max downwards (the first budget
            is for the interval that starts at t_max).
        breaks: interior times where intervals meet (default: the schedule's
            :meth:`~nudiff.schedules.Schedule.breakpoints`), any order.
        reference: flat component index whose log-SNR ``log-snr`` and ``edm`` follow.
        rho: EDM's spacing exponent.
        exponent: ``p`` of the ``auto`` density.
    """
    if budgets is None:
        if steps is None or steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        budgets, breaks = [int(steps)], []
    else:
        budgets = [int(b) for b in budgets]
        if any(b < 1 for b in budgets):
            raise ValueError(f"every budget must be >= 1, got {budgets}")
        if steps is not None and steps != sum(budgets):
            raise ValueError(f"steps ({steps}) must equal the sum of the budgets {budgets}")
        if breaks is None:
            breaks = process.schedule.breakpoints()
    t_min = process.t_min
    if not t_min < t_max <= 1.0:
        raise ValueError(f"t_max must be in ({t_min}, 1], got {t_max}")
    edges = sorted({float(b) for b in breaks}, reverse=True)
    if any(not t_min < b < t_max for b in edges):
        raise ValueError(f"breaks must lie strictly between t_min={t_min} and t_max={t_max}")
    edges = [t_max, *edges, t_min]
    if len(budgets) != len(edges) - 1:
        raise ValueError(
            f"need one budget per interval: {len(edges) - 1} intervals between {edges}, got "
            f"{len(budgets)} budgets"
        )
    if kind == "optimized":
        raise ValueError(
            "the optimized grid is fitted to a model's data moments: pass grid='optimized' to "
            "nudiff.samplers.sample with the model (see nudiff.samplers.optimized)"
        )
    exact = progress_map(process, kind, edges, reference=reference, rho=rho, exponent=exponent)
    parts = [
        _uniform_in(*exact, lo, hi, n)[: None if k == len(budgets) - 1 else -1]
        for k, (hi, lo, n) in enumerate(zip(edges[:-1], edges[1:], budgets, strict=True))
    ]
    ts = torch.from_numpy(np.concatenate(parts))
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError(
            f"the {kind!r} grid with {sum(budgets)} steps repeats a time (too many steps for "
            "float64 resolution?)"
        )
    return ts


def progress_map(process: Process, kind: str, edges=(), **kw):
    """``(P, P^-1)`` of grid ``kind``: the progress in which the grid is uniform, as functions
    of numpy arrays (closed form for scalar schedules, else tabulated; ``edges`` are tabulated
    exactly)."""
    exact = _closed_form(process, kind, kw.get("rho", 7.0))
    if exact is None:
        t_max = max(edges) if len(edges) else 1.0
        t = np.union1d(_fine_times(process, t_max), list(edges))
        p = progress(process, t, kind, **kw)
        exact = (lambda x: np.interp(x, t, p), lambda x: np.interp(x, p, t))
    return exact


def uniform_grid(process: Process, steps: int, t_max: float = 1.0) -> torch.Tensor:
    """``steps + 1`` times uniform in t from ``t_max`` to ``t_min``, float64."""
    return make_grid(process, steps, "uniform", t_max=t_max)
