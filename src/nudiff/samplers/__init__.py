"""Samplers for per-component schedules, behind one entry point, :func:`sample`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nudiff.process import Process
from nudiff.samplers.base import CountingDenoiser, NoiseSource, check_grid
from nudiff.samplers.grids import uniform_grid
from nudiff.samplers.ode import sample_euler, sample_heun
from nudiff.samplers.sde import sample_ancestral, sample_euler_maruyama

SAMPLERS = {
    "ancestral": sample_ancestral,
    "euler-maruyama": sample_euler_maruyama,
    "euler": sample_euler,
    "heun": sample_heun,
}
STOCHASTIC = {"ancestral", "euler-maruyama"}


@dataclass
class SampleResult:
    u: torch.Tensor  # (B, C, H, W) whitened components
    images: torch.Tensor  # (B, C, H, W) image space
    nfe: int
    seconds: float


def sample(
    denoiser,
    process: Process,
    n: int,
    *,
    sampler: str = "ancestral",
    steps: int = 100,
    ts: torch.Tensor | None = None,
    seed: int = 0,
    start: int = 0,
    extra: dict | None = None,
    callback=None,
    progress: bool = False,
    device=None,
    dtype=torch.float32,
) -> SampleResult:
    """Draw ``n`` samples; sample ``k`` uses seed ``(seed, start + k)``, so it does not depend
    on the batch size. ``ts`` overrides the default grid of ``steps`` steps."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    ts = check_grid(uniform_grid(process, steps) if ts is None else ts)
    source = NoiseSource(seed, start, n, device)
    model = CountingDenoiser(denoiser, extra)
    began = time.perf_counter()
    with torch.inference_mode():
        u = (
            source.randn(process.shape, dtype)
            * process.prior_variance().to(device, dtype)[0].sqrt()
        )
        noise = source if sampler in STOCHASTIC else None
        u0 = SAMPLERS[sampler](
            model, process, u, ts.to(device), noise=noise, callback=callback, progress=progress
        )
        images = process.decode(u0)
    return SampleResult(u0, images, model.nfe, time.perf_counter() - began)


__all__ = ["SAMPLERS", "CountingDenoiser", "NoiseSource", "SampleResult", "sample", "uniform_grid"]
