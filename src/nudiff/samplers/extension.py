"""Column-wise extension: a model trained on ``W`` columns generates images of any width.

A column schedule (GUD's column-wise generation: :class:`~nudiff.schedules.Sequential` or
clipped :class:`~nudiff.schedules.SoftConditioning` on the pixel column) gives column ``p`` of
the window the noising window ``[start_p, start_p + L]`` with ``start_p = t0 + (W - 1 - p) D``:
every column has the same log-SNR profile, shifted by ``D`` per column. So the window's state at
time ``t`` moved ``s`` columns to the left is, position by position, the state at ``t + s D``;
the ``s`` positions that open on the right are then pure noise (independent prior draws) as long
as ``t >= t0 + L - D``, and the ``s`` columns that leave on the left are finished (clean) as long
as ``t <= t0 + (W - s) D``. Rolling the window at ``tau = t0 + L - D`` therefore never leaves the
forward marginal of a ``W``-column window: each round draws ``s`` prior columns, runs any
sampler from ``tau + s D`` down to ``tau`` and emits the ``s`` finished columns. With an exact
window denoiser the joint law of every ``W`` consecutive columns is exact, and a field that is
Markov in the column direction over fewer than ``W - s`` columns is reproduced exactly at any
width (``tests/test_extension.py``).

Input images are put at ``tau`` by the forward process. Their columns that are still clean at
``tau`` are kept bit for bit; with overlapping windows (``L > D``) the last ``ceil(L / D) - 1``
input columns are still being generated at ``tau`` and are generated again, jointly with the new
ones (``L = D``, disjoint windows: every input column is kept).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nudiff.bases import Identity
from nudiff.process import Process
from nudiff.samplers.base import CountingDenoiser, NoiseSource
from nudiff.schedules import SoftConditioning, WindowedLogSNR


@dataclass(frozen=True)
class ColumnWindows:
    """The column structure of a schedule on a window of ``width`` columns: column ``p`` is
    noised during ``[t0 + (width - 1 - p) shift, t0 + (width - 1 - p) shift + length]``."""

    width: int
    t0: float
    shift: float
    length: float

    @property
    def roll_time(self) -> float:
        """``tau``: the time at which the window is rolled (see the module docstring)."""
        return self.t0 + self.length - self.shift

    @property
    def max_stride(self) -> int:
        """The most columns one round can add: the columns leaving must be clean at ``tau``."""
        return int(math.floor(self.width + 1 - self.length / self.shift + 1e-9))

    @property
    def regenerated(self) -> int:
        """Input columns still being generated at ``tau`` (generated again by the extension)."""
        return sum(
            self.t0 + (self.width - 1 - p) * self.shift < self.roll_time - 1e-9
            for p in range(self.width)
        )


def column_windows(process: Process, tol: float = 1e-6) -> ColumnWindows:
    """The :class:`ColumnWindows` of ``process``, or a ValueError saying why it has none."""
    if not isinstance(process.basis, Identity):
        raise ValueError(
            "column-wise extension needs the pixel basis (process.basis.type: identity), got "
            f"{type(process.basis).__name__}"
        )
    mean, scale = process.prior.mean, process.prior.scale
    for name, v in (("mean", mean), ("scale", scale)):
        if not torch.equal(v, v[..., :1].expand_as(v)):
            raise ValueError(
                f"column-wise extension moves components between columns, so the prior's {name} "
                "must be the same in every column (process.prior.type: white)"
            )
    sched = process.schedule
    if isinstance(sched, WindowedLogSNR):
        start, end = sched.windows()
    elif isinstance(sched, SoftConditioning) and sched.clip:
        start, end = sched.active_window()
    else:
        raise ValueError(
            "column-wise extension needs a schedule with a noising window per column "
            f"(sequential, or soft with clip: true, on label col), got {type(sched).__name__}"
            + ("" if not isinstance(sched, SoftConditioning) else " without clip")
        )
    start, end = start.double(), end.double()
    if not (
        torch.allclose(start, start[:, :1, :].expand_as(start), atol=tol)
        and torch.allclose(end, end[:, :1, :].expand_as(end), atol=tol)
        and torch.allclose(start, start[:1].expand_as(start), atol=tol)
        and torch.allclose(end, end[:1].expand_as(end), atol=tol)
    ):
        raise ValueError(
            "column-wise extension needs windows that depend on the column only "
            "(a schedule on label col)"
        )
    s, e = start[0, 0], end[0, 0]  # (W,)
    w = s.numel()
    if w < 2:
        raise ValueError("column-wise extension needs at least 2 columns")
    steps, lengths = s[:-1] - s[1:], e - s
    shift, length = float(steps.mean()), float(lengths.mean())
    if not (
        shift > tol and (steps - shift).abs().max() < tol and (lengths - length).abs().max() < tol
    ):
        raise ValueError(
            "column-wise extension needs every column to have the same window, each starting a "
            "fixed time before the one to its left (columns generated left to right)"
        )
    cw = ColumnWindows(w, float(s[-1]), shift, length)
    if cw.max_stride < 1:
        raise ValueError(
            f"the column windows overlap too much to slide: each spans {length / shift:.1f} "
            f"columns' shifts, more than the {w} columns the model sees (use sequential with a "
            "smaller overlap, or soft with a smaller softness)"
        )
    return cw


def _segment(t_hi: float, t_lo: float, density: int, breaks: list[float]) -> torch.Tensor:
    """A decreasing grid from ``t_hi`` to ``t_lo``: uniform in t at ``density`` steps per unit
    time (at least one step), plus the schedule's breakpoints inside, where log-SNRs kink."""
    n = max(1, math.ceil(density * (t_hi - t_lo) - 1e-9))
    grid = torch.linspace(t_hi, t_lo, n + 1, dtype=torch.float64)
    tol = 1e-9 * max(1.0, t_hi)
    inside = torch.tensor([b for b in breaks if t_lo + tol < b < t_hi - tol], dtype=torch.float64)
    # a grid time a rounding error away from a breakpoint would make a sliver step: the exact
    # breakpoint replaces it
    near = (grid[1:-1, None] - inside[None, :]).abs().le(tol).any(1)
    grid = torch.cat([grid[:1], grid[1:-1][~near], grid[-1:], inside])
    return grid.sort(descending=True).values


@dataclass
class ExtensionResult:
    images: torch.Tensor  # (B, C, H, W_in + columns) image space
    kept: int  # leading input columns kept bit for bit
    nfe: int  # network evaluations per image
    seconds: float


def extend_columns(
    denoiser,
    process: Process,
    images: torch.Tensor,
    columns: int,
    *,
    sampler,
    steps: int = 256,
    stride: int | None = None,
    seed: int = 0,
    start: int = 0,
    stochastic: bool = False,
    options: dict | None = None,
    progress: bool = False,
) -> ExtensionResult:
    """``images`` ``(B, C, H, W_in)`` (``W_in >= W``, the model's width) extended by ``columns``
    new columns on the right.

    ``sampler``: a sampler function (:data:`nudiff.samplers.SAMPLERS`), run on each round's
    segment of the time grid with ``options``; ``stochastic`` samplers get per-sample noise.
    ``steps``: steps per unit time (a full ``W``-column sample from ``t = 1`` would take about
    ``steps``). ``stride``: columns added per round (default ``min(W // 4, max_stride)``); the
    model always sees the last ``W`` columns. Sample ``k`` uses seed ``(seed, start + k)``, so
    results do not depend on the batch size.
    """
    c, h, w = process.shape
    cw = column_windows(process)
    stride = _check_extension(images, columns, stride, process.shape, cw)
    device = next(iter([*denoiser.parameters(), *denoiser.buffers()]), images).device
    n, w_in = len(images), images.shape[3]
    x = images.to(device, torch.float32)
    tau = max(cw.roll_time, process.t_min)
    model = CountingDenoiser(denoiser)
    sample_kw = dict(options or {})
    began = time.perf_counter()
    with torch.inference_mode():
        u = _window_at(process, x[..., w_in - w :], tau, NoiseSource(seed, start, n, device))
        out = torch.cat([x, x.new_zeros(n, c, h, columns)], dim=3)
        kept = w_in - cw.regenerated
        prior_std = process.prior_variance().to(x)[0].sqrt().expand(c, h, w)
        alpha_tau = process.coefficients(torch.tensor(tau), u)[0].to(x.dtype)
        sizes = [stride] * (columns // stride) + ([columns % stride] if columns % stride else [])
        breaks = process.schedule.breakpoints()
        right = w_in  # the window's end, in output columns
        for r, s in _rounds(sizes, progress):
            source = NoiseSource((seed + 1) * 100_003 + r, start, n, device)
            # the window moves s columns on: s fresh prior columns open on the right
            u = torch.cat([u[..., s:], source.randn((c, h, s)) * prior_std[..., :s]], dim=3)
            right += s
            last = r == len(sizes) - 1
            ts = _segment(tau + s * cw.shift, process.t_min if last else tau, steps, breaks)
            noise = source if stochastic else None
            u = sampler(
                model, process, u, ts.to(device), noise=noise, denoise_final=last, **sample_kw
            )
            # finished columns: those leaving in the next round (clean at tau), or all at the end
            x_win = process.decode(u if last else u / alpha_tau)
            lo = right - w
            hi = right if last else lo + sizes[r + 1]
            if hi > kept:
                out[..., max(lo, kept) : hi] = x_win[..., max(lo, kept) - lo : hi - lo]
    return ExtensionResult(out, kept, model.nfe, time.perf_counter() - began)


def _check_extension(
    images: torch.Tensor,
    columns: int,
    stride: int | None,
    shape: tuple[int, int, int],
    cw: ColumnWindows,
) -> int:
    """Validate :func:`extend_columns`' arguments for a model of ``shape`` ``(C, H, W)``;
    return the stride (default ``min(W // 4, max_stride)``, at least 1)."""
    c, h, w = shape
    if images.dim() != 4 or tuple(images.shape[1:3]) != (c, h) or images.shape[3] < w:
        raise ValueError(
            f"images must be (B, {c}, {h}, W_in) with W_in >= {w} (the model's width), got "
            f"{tuple(images.shape)}"
        )
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    stride = stride if stride is not None else max(1, min(w // 4, cw.max_stride))
    if not 1 <= stride <= cw.max_stride:
        raise ValueError(f"stride must be in [1, {cw.max_stride}] for this schedule, got {stride}")
    return stride


def _window_at(process: Process, x: torch.Tensor, tau: float, noise: NoiseSource) -> torch.Tensor:
    """The last window ``x`` ``(B, C, H, W)`` of the input images put at time ``tau`` by the
    forward process: ``(B, C, H, W)`` in the process's space."""
    u = process.marginal(process.encode(x), torch.tensor(tau), noise.randn(tuple(x.shape[1:])))
    return u.to(x.dtype)


def _rounds(sizes: list[int], progress: bool):
    """``(round, columns added)`` pairs, with a progress bar if ``progress``."""
    rounds = enumerate(sizes)
    if progress:
        rounds = tqdm(rounds, total=len(sizes), desc="extend", unit="round", leave=False)
    return rounds
