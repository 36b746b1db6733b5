"""Time grids optimised for a sampler on the exact Gaussian surrogate of the data.

Every run holds a Gaussian model of its data: the per-component mean and standard deviation of
the whitened training components that its denoiser's preconditioning uses (``data_mean``,
``data_std``). On that Gaussian, diagonal in the basis, the exact denoiser is affine in ``u``,
so a deterministic sampler's output is ``N(c, g^2 p)`` per component in closed form
(:func:`~nudiff.samplers.surrogate.sampler_map`; ``p``: the prior's variance), and its KL
divergence to the data's ``N(m, w)`` is a function of the grid alone. :func:`optimize_grid`
moves the interior grid times to minimise it: Align Your Steps (Sabour et al. 2024) without
sampling trajectories, exact for the surrogate.

The grid is written as increments of the ``auto`` grid's progress, ``softmax(theta)`` per
interval (the schedule's breakpoints, where multi-scale stages meet, stay grid points), and
``theta`` is searched by a compass search from ``theta = 0``, the ``auto`` grid itself: the
result is never worse than ``auto`` on the surrogate. The KL is averaged per basis group
(Haar band, frequency octave), then over groups, so that small groups count.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nudiff.oracle import DiagonalGaussian, GaussianOracle
from nudiff.process import Process
from nudiff.samplers.grids import make_grid, progress_map
from nudiff.samplers.registry import SAMPLERS, STOCHASTIC
from nudiff.samplers.surrogate import sampler_map

#: bump when the objective or the search changes: cached grids are then recomputed
VERSION = 1
_MEMO: dict[str, torch.Tensor] = {}


def deterministic(sampler: str, options: dict | None = None) -> bool:
    """Whether ``sampler`` with ``options`` is a deterministic fixed-grid sampler, the kind
    whose grid can be optimised on the surrogate."""
    if sampler == "dopri5":
        return False
    if sampler == "ddim":
        return float((options or {}).get("eta", 0.0)) == 0.0
    return sampler not in STOCHASTIC


def surrogate(denoiser, process: Process) -> GaussianOracle:
    """The exact denoiser (float64, CPU) of the Gaussian with ``denoiser``'s per-component data
    moments, for ``process`` (a multi-scale model: its full-resolution scale's)."""
    for d in [denoiser, *getattr(denoiser, "scales", [])]:
        mean, std = getattr(d, "data_mean", None), getattr(d, "data_std", None)
        if mean is not None and tuple(mean.shape) == tuple(process.shape):
            break
    else:
        raise ValueError("the optimized grid needs a denoiser with per-component data moments")
    prior = process.prior
    scale, shift = prior.scale.detach().cpu().double(), prior.mean.detach().cpu().double()
    mean, std = mean.detach().cpu().double(), std.detach().cpu().double()
    data = DiagonalGaussian(process.basis, shift + scale * mean, (scale * std) ** 2)
    # a copy: the model's own process stays where it is
    return GaussianOracle(copy.deepcopy(process).to("cpu"), data).double()


def grid_kl(sampler, oracle: GaussianOracle, ts: torch.Tensor, options=None) -> float:
    """Mean over basis groups of the mean KL(sampler's output || data) per component, in nats."""
    process = oracle.process
    g, c = sampler_map(sampler, oracle, process, ts, options)
    var = g**2 * process.prior_variance().to(g)[0]
    w = oracle.w
    kl = 0.5 * ((var + (c - oracle.m) ** 2) / w - 1 - torch.log(var / w))
    index, names = process.basis.groups()
    flat = index.flatten()
    sums = torch.zeros(len(names), dtype=kl.dtype).index_add_(0, flat, kl.flatten())
    counts = torch.bincount(flat, minlength=len(names)).to(kl.dtype)
    value = (sums / counts).mean().item()
    return value if np.isfinite(value) else float("inf")


def optimize_grid(
    oracle: GaussianOracle,
    sampler: str,
    steps: int | None,
    *,
    options: dict | None = None,
    budgets: Sequence[int] | None = None,
    max_evals: int = 3000,
) -> tuple[torch.Tensor, dict]:
    """The grid ``(steps + 1,)`` (float64, decreasing) that minimises :func:`grid_kl` for
    ``sampler`` on ``oracle``, and ``{"kl_auto", "kl", "evals"}``. With ``budgets`` the
    schedule's breakpoints stay grid points and each interval keeps its number of steps."""
    if not deterministic(sampler, options):
        raise ValueError(
            f"the optimized grid needs a deterministic fixed-grid sampler, not {sampler!r}"
        )
    process, fn = oracle.process, SAMPLERS[sampler]
    auto = make_grid(process, steps, "auto", budgets=budgets)
    counts = [len(auto) - 1] if budgets is None else [int(b) for b in budgets]
    cuts = np.cumsum([0, *counts])
    forward, inverse = progress_map(process, "auto", auto[cuts].tolist())
    p_edges = forward(auto[cuts].numpy())

    def grid(theta: np.ndarray) -> torch.Tensor:
        parts = []
        for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            z = np.exp(theta[lo:hi] - theta[lo:hi].max())
            q = np.concatenate([[0.0], np.cumsum(z / z.sum())])
            t = inverse(p_edges[k] + (p_edges[k + 1] - p_edges[k]) * q)
            t[0], t[-1] = auto[lo].item(), auto[hi].item()
            parts.append(t[:-1] if k < len(counts) - 1 else t)
        return torch.from_numpy(np.concatenate(parts))

    def loss(theta: np.ndarray) -> float:
        ts = grid(theta)
        if not (ts[1:] < ts[:-1]).all():
            return float("inf")
        return grid_kl(fn, oracle, ts, options)

    theta = np.zeros(int(cuts[-1]))
    best, evals = loss(theta), 1
    kl_auto, step = best, 1.0
    while step > 1e-2 and evals < max_evals:
        improved = False
        for i in range(len(theta)):
            for sign in (1.0, -1.0):
                trial = theta.copy()
                trial[i] += sign * step
                value, evals = loss(trial), evals + 1
                if value < best:
                    theta, best, improved = trial, value, True
                    break
        if not improved:
            step /= 2
    return grid(theta), {"kl_auto": kl_auto, "kl": best, "evals": evals}


def optimized_grid(
    denoiser,
    process: Process,
    sampler: str,
    steps: int | None,
    *,
    options: dict | None = None,
    budgets: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """:func:`optimize_grid` on ``denoiser``'s surrogate, computed once per process, data
    moments, sampler, options and budget: kept in memory, and as JSON in ``cache_dir`` (a run
    folder's ``grids/``) when given."""
    oracle = surrogate(denoiser, process)
    key = _key(oracle, sampler, steps, options, budgets)
    if key in _MEMO:
        return _MEMO[key].clone()
    path = None if cache_dir is None else Path(cache_dir) / f"{sampler}-{key[:16]}.json"
    if path is not None and path.is_file():
        ts = torch.tensor(json.loads(path.read_text())["ts"], dtype=torch.float64)
    else:
        ts, info = optimize_grid(oracle, sampler, steps, options=options, budgets=budgets)
        if path is not None:
            record = {"sampler": sampler, "steps": steps, "options": options or {}}
            record.update(budgets=list(budgets) if budgets else None, **info, ts=ts.tolist())
            _write_atomic(path, json.dumps(record, indent=1))
    _MEMO[key] = ts
    return ts.clone()


def _key(oracle, sampler, steps, options, budgets) -> str:
    h = hashlib.sha256()
    for x in (oracle.m, oracle.w):
        h.update(x.numpy().tobytes())
    p = oracle.process
    text = [VERSION, repr(p), p.t_min, sampler, steps, sorted((options or {}).items()), budgets]
    h.update(repr(text).encode())
    h.update(p.prior_variance().double().numpy().tobytes())
    t = torch.linspace(p.t_min, 1.0, 33, dtype=torch.float64)
    h.update(p.schedule.log_snr(t).double().clamp(-50, 50).numpy().tobytes())
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
