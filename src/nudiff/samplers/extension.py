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

:func:`seam_statistics` says whether an extension is seamless: adjacent-column differences
across the input seam and the round seams (:func:`extension_seams`) against those inside the
real input, and per-column means and standard deviations of the real and generated columns.
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


def extension_blocks(
    cw: ColumnWindows, w_in: int, columns: int, stride: int
) -> list[tuple[int, int, int]]:
    """Per round of :func:`extend_columns`: ``(lo, a, b)``, the first output column of the
    window after the round's move and the output columns ``[a, b)`` the round writes (finished
    there; ``a == b``: none). The blocks tile ``[kept, w_in + columns)`` left to right, so the
    starts ``a`` of the non-empty blocks are the seams: the first, ``kept``, between the input
    and the generated columns, the others between generation rounds."""
    sizes = [stride] * (columns // stride) + ([columns % stride] if columns % stride else [])
    kept = w_in - cw.regenerated
    blocks, right = [], w_in  # the window's end, in output columns
    for r, s in enumerate(sizes):
        right += s
        lo = right - cw.width
        hi = right if r == len(sizes) - 1 else lo + sizes[r + 1]
        blocks.append((lo, min(max(lo, kept), hi), hi))
    return blocks


def extension_seams(process: Process, w_in: int, columns: int, stride: int | None = None):
    """The output columns that start a new block of :func:`extend_columns` for ``process``
    (column ``p`` and ``p - 1`` come from different rounds, or from the input and a round):
    ``[kept, round seams ...]``; ``stride`` None: the default."""
    cw = column_windows(process)
    stride = stride if stride is not None else _default_stride(cw)
    return [a for _, a, b in extension_blocks(cw, w_in, columns, stride) if b > a]


def seam_statistics(images: torch.Tensor, kept: int, seams: list[int] | None = None) -> dict:
    """Whether an extension is seamless: statistics of ``images`` ``(B, C, H, W)`` whose
    columns ``[0, kept)`` are real (the input, kept bit for bit) and ``[kept, W)`` generated.

    ``msd``: the mean squared difference between adjacent columns (over images, channels and
    rows), a value per column pair: ``real`` inside the kept input (mean, and the ``min`` and
    ``max`` over its pairs), ``seam`` across the input/generated boundary (columns ``kept - 1``
    and ``kept``), ``rounds`` across the other ``seams`` (output columns that start a new
    generation round, mean and max; see :func:`extension_seams`) and ``generated`` between the
    other generated columns. ``seam_ratio``: ``seam / real``, near 1 when seamless (a
    continuation unrelated to the input gives about twice the pixel variance over ``real``:
    far above 1 on data whose neighbouring columns are alike).
    ``column_mean`` / ``column_std``: per column over images, channels and rows, averaged over
    the real and over the generated columns (stationary data: equal), and ``per_column``: both
    for every column, for plots."""
    x = images.detach().double().cpu()
    w = x.shape[-1]
    if not 1 <= kept < w:
        raise ValueError(f"need 1 <= kept < W = {w} (real and generated columns), got {kept}")
    seams = sorted(set(seams or []) - {kept})
    if any(not kept < p < w for p in seams):
        raise ValueError(f"seams must lie in ({kept}, {w}), got {seams}")
    d2 = (x[..., 1:] - x[..., :-1]).square().mean((0, 1, 2))  # pair p: columns p, p + 1
    real = d2[: kept - 1]
    rounds = d2[[p - 1 for p in seams]]
    inside = torch.ones(w - 1, dtype=torch.bool)
    inside[:kept] = False
    inside[[p - 1 for p in seams]] = False
    cols = x.transpose(0, 3).reshape(w, -1)  # (W, B C H)
    mean, std = cols.mean(1), cols.std(1)

    def avg(v: torch.Tensor, f=torch.mean) -> float | None:
        return float(f(v)) if v.numel() else None

    seam, real_msd = float(d2[kept - 1]), avg(real)
    return {
        "msd": {
            "real": real_msd,
            "real_min": avg(real, torch.min),
            "real_max": avg(real, torch.max),
            "seam": seam,
            "rounds": avg(rounds),
            "rounds_max": avg(rounds, torch.max),
            "generated": avg(d2[inside]),
        },
        "seam_ratio": seam / real_msd if real_msd else None,
        "column_mean": {"real": avg(mean[:kept]), "generated": avg(mean[kept:])},
        "column_std": {"real": avg(std[:kept]), "generated": avg(std[kept:])},
        "kept": kept,
        "seams": [kept, *seams],
        "per_column": {"mean": mean.tolist(), "std": std.tolist(), "msd": d2.tolist()},
    }


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
        blocks = extension_blocks(cw, w_in, columns, stride)
        breaks = process.schedule.breakpoints()
        first = w_in - w  # the window's first output column
        for r, (lo, a, b) in _rounds(blocks, progress):
            s, first = lo - first, lo
            source = NoiseSource((seed + 1) * 100_003 + r, start, n, device)
            # the window moves s columns on: s fresh prior columns open on the right
            u = torch.cat([u[..., s:], source.randn((c, h, s)) * prior_std[..., :s]], dim=3)
            last = r == len(blocks) - 1
            ts = _segment(tau + s * cw.shift, process.t_min if last else tau, steps, breaks)
            noise = source if stochastic else None
            u = sampler(
                model, process, u, ts.to(device), noise=noise, denoise_final=last, **sample_kw
            )
            # finished columns: those leaving in the next round (clean at tau), or all at the end
            x_win = process.decode(u if last else u / alpha_tau)
            out[..., a:b] = x_win[..., a - lo : b - lo]
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
    stride = stride if stride is not None else _default_stride(cw)
    if not 1 <= stride <= cw.max_stride:
        raise ValueError(f"stride must be in [1, {cw.max_stride}] for this schedule, got {stride}")
    return stride


def _default_stride(cw: ColumnWindows) -> int:
    """``min(W // 4, max_stride)``, at least 1."""
    return max(1, min(cw.width // 4, cw.max_stride))


def _window_at(process: Process, x: torch.Tensor, tau: float, noise: NoiseSource) -> torch.Tensor:
    """The last window ``x`` ``(B, C, H, W)`` of the input images put at time ``tau`` by the
    forward process: ``(B, C, H, W)`` in the process's space."""
    u = process.marginal(process.encode(x), torch.tensor(tau), noise.randn(tuple(x.shape[1:])))
    return u.to(x.dtype)


def _rounds(blocks: list, progress: bool):
    """``(round, block)`` pairs, with a progress bar if ``progress``."""
    rounds = enumerate(blocks)
    if progress:
        rounds = tqdm(rounds, total=len(blocks), desc="extend", unit="round", leave=False)
    return rounds
