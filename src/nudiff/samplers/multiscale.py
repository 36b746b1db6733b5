"""Coarse-to-fine sampling of a multi-scale model (MSDiff), with any sampler.

The grid is cut at the finishing times ``T_k``. The coarsest scale starts from the prior at
``t = 1`` on its ``(H / 2^L, W / 2^L)`` block; when a segment ends at ``T_{s-1}``, detail band
``s - 1`` is drawn from the prior (it is pure noise, independent of the rest, for every
``t >= T_{s-1}``) and the next segment runs at twice the resolution. Each segment is an ordinary
sampler run on the scale's sub-process, so no network ever sees bands that are pure noise and
every sampler works unchanged; multistep samplers restart (at first order) in each segment.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from nudiff.models.multiscale import MultiScaleDenoiser
from nudiff.samplers.base import CountingDenoiser, NoiseSource


def equal_budgets(steps: int, scales: int) -> list[int]:
    """``steps`` split equally over ``scales`` (MSDiff's choice), coarsest first; the remainder
    goes to the coarsest scales, where steps are cheapest."""
    steps = int(steps)
    if steps < scales:
        raise ValueError(f"a multi-scale model with {scales} scales needs >= {scales} steps")
    base, extra = divmod(steps, scales)
    return [base + (i < extra) for i in range(scales)]


def split_grid(model: MultiScaleDenoiser, ts: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``[(scale, segment), ...]`` from the coarsest: the decreasing grid ``ts`` cut at the
    finishing times inside it, which must be grid points."""
    cuts = [0]
    for b in model.finishing_times[:-1]:
        if ts[-1] < b < ts[0]:
            hit = (ts - b).abs() <= 1e-12 * max(1.0, abs(b))
            if not hit.any():
                raise ValueError(
                    f"the time grid must contain the finishing time {b} for coarse-to-fine "
                    "sampling (make_grid with per-scale budgets does)"
                )
            cuts.append(int(hit.nonzero()[0]))
    cuts = sorted(set(cuts) | {len(ts) - 1})
    return [(model.scale_at(float(ts[b])), ts[a : b + 1]) for a, b in pairwise(cuts)]


def _grow(model: MultiScaleDenoiser, u: torch.Tensor, scale: int, source: NoiseSource):
    """Components of ``scale`` from those of a coarser one: the new bands from the prior."""
    process = model.scales[scale].process
    std = process.prior_variance().to(u)[0].sqrt()
    out = source.randn(process.shape, u.dtype).to(u.device) * std
    _, h, w = u.shape[1:]
    out[..., :h, :w] = u
    return out


@torch.inference_mode()
def sample_coarse_to_fine(
    model: MultiScaleDenoiser,
    sampler,
    ts: torch.Tensor,
    source: NoiseSource,
    *,
    stochastic: bool,
    dtype=torch.float32,
    extra: dict | None = None,
    callback=None,
    progress: bool = False,
    options: dict | None = None,
    wrap=None,
) -> tuple[torch.Tensor, int]:
    """Run ``sampler`` (a function of :data:`nudiff.samplers.SAMPLERS`) scale by scale along
    ``ts`` and return the full-resolution components ``(n, C, H, W)`` and the NFE.

    ``extra``: keywords of every call (``labels``); ``wrap``: applied to each scale's denoiser
    (classifier-free guidance: :class:`~nudiff.samplers.base.Guided`). ``callback`` gets the
    sampler's dict plus ``scale``; ``i`` counts steps over all scales.
    """
    segments = split_grid(model, ts)
    device = ts.device
    first = model.scales[segments[0][0]].process
    std = first.prior_variance().to(device, dtype)[0].sqrt()
    u = source.randn(first.shape, dtype).to(device) * std
    nfe, done = 0, 0
    for k, (scale, segment) in enumerate(segments):
        if u.shape[-1] != model.scales[scale].process.shape[-1]:
            u = _grow(model, u, scale, source)
        denoiser = model.scales[scale] if wrap is None else wrap(model.scales[scale])
        counting = CountingDenoiser(denoiser, extra)
        hook = None
        if callback is not None:

            def hook(info, scale=scale, offset=done):
                callback({**info, "i": info["i"] + offset, "scale": scale})

        u = sampler(
            counting,
            model.scales[scale].process,
            u,
            segment,
            noise=source if stochastic else None,
            callback=hook,
            progress=progress,
            denoise_final=k == len(segments) - 1,
            **(options or {}),
        )
        nfe += counting.nfe
        done += len(segment) - 1
    if u.shape[-1] != model.process.shape[-1]:  # stopped above T_0: finer bands are noise
        u = _grow(model, u, 0, source)
    return u, nfe
