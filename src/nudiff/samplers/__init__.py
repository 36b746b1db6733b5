"""Samplers for per-component schedules, behind one entry point, :func:`sample`."""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from nudiff.models.multiscale import MultiScaleDenoiser
from nudiff.process import Process
from nudiff.samplers.base import CountingDenoiser, Guided, NoiseSource, check_grid
from nudiff.samplers.grids import GRIDS, make_grid, uniform_grid
from nudiff.samplers.multiscale import equal_budgets, sample_coarse_to_fine
from nudiff.samplers.registry import SAMPLERS, STOCHASTIC
from nudiff.samplers.skipping import BrickSkip, SkippingDenoiser

_COMMON = {"noise", "callback", "progress", "denoise_final"}


def sampler_options(name: str) -> dict[str, object]:
    """The extra keyword options of sampler ``name`` and their defaults (e.g. ``eta``)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    params = inspect.signature(SAMPLERS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON}


def nfe_per_step(name: str, options: dict | None = None) -> int:
    """Model evaluations per grid step (adaptive ``dopri5`` has none fixed: 0)."""
    if name == "dopri5":
        return 0
    if name == "heun":
        return 2
    if name == "pc":
        return 1 + int((options or {}).get("corrector_steps", 1))
    return 1


def steps_for_nfe(name: str, nfe: int, options: dict | None = None) -> int:
    """The largest step count whose NFE (steps x per-step + 1 final denoising) is <= ``nfe``."""
    per = nfe_per_step(name, options)
    if per == 0:
        raise ValueError("dopri5 is adaptive: set its tolerances, not an NFE")
    steps = (nfe - 1) // per
    if steps < 1:
        raise ValueError(f"{name} needs at least {per + 1} NFE, got {nfe}")
    return steps


@dataclass
class SampleResult:
    u: torch.Tensor  # (B, C, H, W) whitened components
    images: torch.Tensor  # (B, C, H, W) image space
    nfe: int
    seconds: float
    skipped: int = 0  # network calls that ran only the first LEGO bricks (``skip``)


def sample(
    denoiser,
    process: Process,
    n: int,
    *,
    sampler: str = "dpmpp-2m",
    steps: int | None = 50,
    ts: torch.Tensor | None = None,
    grid: str = "auto",
    budgets: Sequence[int] | None = None,
    options: dict | None = None,
    seed: int = 0,
    start: int = 0,
    extra: dict | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    skip: BrickSkip | None = None,
    callback=None,
    progress: bool = False,
    device=None,
    dtype=torch.float32,
) -> SampleResult:
    """Draw ``n`` samples ``(n, C, H, W)``.

    Sample ``k`` uses seed ``(seed, start + k)`` so it does not depend on the batch size. The
    time grid is ``ts`` if given, else :func:`make_grid` of kind ``grid`` with ``steps`` steps
    (or per-interval ``budgets``). ``options`` are the sampler's own keywords (see
    :func:`sampler_options`, e.g. ``{"eta": 1.0}`` for DDIM); ``extra`` goes to the denoiser
    (conditioning).

    A :class:`~nudiff.models.multiscale.MultiScaleDenoiser` is sampled coarse to fine
    (:func:`~nudiff.samplers.multiscale.sample_coarse_to_fine`), its ``steps`` split equally
    over the scales unless ``budgets`` (coarsest scale first) say otherwise.

    ``labels`` ``(n,)``: classes of a class-conditional model, sampled with classifier-free
    ``guidance`` (1: the conditional model; applied at times in ``guidance_interval`` if given;
    see :class:`~nudiff.samplers.base.Guided`: a guided call runs the labelled and the null
    batch together, so it counts one NFE at twice the batch). Without labels a
    class-conditional model samples unconditionally (its null label) and ``guidance`` is unused.

    ``skip`` (a LEGO denoiser): run only its first bricks from a fraction of the steps on
    (:class:`~nudiff.samplers.skipping.BrickSkip`).
    """
    options = check_options(sampler, options)
    guide = None
    if labels is not None:
        extra = {**(extra or {}), "labels": check_labels(denoiser, labels, n).to(device)}
        guide = partial(Guided, guidance=guidance, interval=guidance_interval)
    ts = time_grid(denoiser, process, ts, steps, grid, budgets, sampler, options).to(device)
    source = NoiseSource(seed, start, n, device)
    kw = {"callback": callback, "progress": progress}
    if isinstance(denoiser, MultiScaleDenoiser):
        if skip is not None:
            raise ValueError("brick skipping does not apply to a multi-scale model")
        kw.update(dtype=dtype, extra=extra, options=options, wrap=guide)
        return _coarse_to_fine(denoiser, process, sampler, ts, source, kw)
    if skip is not None:
        if sampler == "dopri5":
            raise ValueError("brick skipping needs a fixed-step sampler, not dopri5")
        denoiser = SkippingDenoiser(denoiser, skip, ts)
    fn = _own_sampler(denoiser, sampler) or SAMPLERS[sampler]
    model = CountingDenoiser(denoiser if guide is None else guide(denoiser), extra)
    began = time.perf_counter()
    with torch.inference_mode():
        std = process.prior_variance().to(device, dtype)[0].sqrt()
        u = source.randn(process.shape, dtype) * std
        noise = source if sampler in STOCHASTIC else None
        u0 = fn(model, process, u, ts, noise=noise, **kw, **options)
        images = process.decode(u0)
    skipped = denoiser.skipped_calls if skip is not None else 0
    return SampleResult(u0, images, model.nfe, time.perf_counter() - began, skipped)


def _coarse_to_fine(model, process, sampler: str, ts, source, kw: dict) -> SampleResult:
    """:func:`sample` of a multi-scale model: coarse to fine (``kw``: the keywords of
    :func:`~nudiff.samplers.multiscale.sample_coarse_to_fine`)."""
    began = time.perf_counter()
    stochastic = sampler in STOCHASTIC
    u0, nfe = sample_coarse_to_fine(
        model, SAMPLERS[sampler], ts, source, stochastic=stochastic, **kw
    )
    with torch.inference_mode():
        images = process.decode(u0)
    return SampleResult(u0, images, nfe, time.perf_counter() - began)


def check_options(sampler: str, options: dict | None) -> dict:
    """``options`` as a dict, checked against the keywords sampler ``sampler`` takes."""
    allowed = sampler_options(sampler)
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for sampler {sampler!r}; it takes {sorted(allowed)}"
        )
    return options


def time_grid(
    denoiser,
    process: Process,
    ts,
    steps,
    grid: str,
    budgets,
    sampler=None,
    options=None,
    cache_dir=None,
) -> torch.Tensor:
    """``ts`` if given, else :func:`make_grid` of kind ``grid`` with ``steps`` steps or
    per-interval ``budgets`` (a multi-scale model: ``steps`` split equally over its scales
    unless ``budgets`` say otherwise), or the ``optimized`` grid of ``sampler`` with
    ``options`` for ``denoiser`` (:mod:`nudiff.samplers.optimized`, kept in ``cache_dir``);
    checked
    (:func:`~nudiff.samplers.base.check_grid`)."""
    if ts is None:
        if isinstance(denoiser, MultiScaleDenoiser) and budgets is None:
            budgets = equal_budgets(steps, len(denoiser.scales))
        if grid == "optimized":
            from nudiff.samplers.optimized import optimized_grid

            n = None if budgets is not None else steps
            ts = optimized_grid(
                denoiser, process, sampler, n, options=options, budgets=budgets, cache_dir=cache_dir
            )
        else:
            ts = make_grid(process, None if budgets is not None else steps, grid, budgets=budgets)
    return check_grid(ts)


def _own_sampler(denoiser, sampler: str):
    """A model's own version of ``sampler`` (None: the model samples with the library's): a
    model whose sampling differs from the linear process's (a Neural Diffusion Model's learned
    transform) has a ``sampler_for(name)`` method that returns the step function, or raises
    for a sampler it cannot use."""
    own = getattr(denoiser, "sampler_for", None)
    return own(sampler) if own is not None else None


def check_labels(denoiser, labels, n: int) -> torch.Tensor:
    """``labels`` as int64 ``(n,)``, checked against the model's classes (a ValueError)."""
    k = getattr(denoiser, "num_classes", None)
    if k is None:
        raise ValueError("class labels need a class-conditional model (model.num_classes)")
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.shape != (n,):
        raise ValueError(f"need one label per sample ({n}), got {labels.numel()}")
    if n and not 0 <= int(labels.min()) <= int(labels.max()) < k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got {sorted(set(labels.tolist()))}")
    return labels


__all__ = [
    "GRIDS",
    "SAMPLERS",
    "BrickSkip",
    "CountingDenoiser",
    "Guided",
    "NoiseSource",
    "SampleResult",
    "make_grid",
    "nfe_per_step",
    "sample",
    "sampler_options",
    "steps_for_nfe",
    "uniform_grid",
]
