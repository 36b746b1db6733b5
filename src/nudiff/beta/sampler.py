"""Beta diffusion's reverse sampler: multiplicative Beta steps in logit space."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from nudiff.beta.gamma import logit_beta
from nudiff.samplers import NoiseSource, SampleResult

SAMPLER = "beta"


def alpha_grid(logit_alpha_min: float, steps: int) -> list[float]:
    """``steps + 1`` values of ``alpha`` from ``sigmoid(logit_alpha_min)`` up to 1, uniform in
    ``log alpha`` (upstream's grid for a few hundred steps): the last step denoises fully."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    log_min = -math.log1p(math.exp(-logit_alpha_min))  # log sigmoid
    return [math.exp(log_min * (1 - i / steps)) for i in range(steps + 1)]


def _logit(a: float) -> float:
    return math.log(a) - math.log1p(-a)


def sample_beta(
    denoiser,
    n: int,
    *,
    steps: int = 200,
    seed: int = 0,
    start: int = 0,
    device=None,
    progress: bool = False,
    callback=None,
):
    """``n`` samples from a :class:`~nudiff.beta.denoiser.BetaDenoiser`; a
    :class:`~nudiff.samplers.SampleResult` with ``u`` the unit-range samples ``x0`` in
    ``[shift, shift + scale]`` and ``images`` the same in ``[-1, 1]``; NFE = ``steps``.

    Starts from ``z ~ Beta(eta alpha_1 m, eta (1 - alpha_1 m))`` with ``m`` the model's
    per-pixel training-data mean, then for each pair ``alpha_t < alpha_s`` of
    :func:`alpha_grid`: ``x0_hat = D(z, alpha_t)``, ``p ~ Beta(eta (alpha_s - alpha_t) x0_hat,
    eta (1 - alpha_s x0_hat))``, ``z <- z + (1 - z) p``. The result is the last ``x0_hat``.
    Sample ``k`` uses the noise of ``(seed, start + k)`` (independent of the batch size). No
    host synchronisation inside the loop.
    """
    process = denoiser.process
    device = device or denoiser.data_mean.device
    source = NoiseSource(seed, start, n, device)
    alphas = alpha_grid(process.logit_alpha_min, steps)
    began = time.perf_counter()
    with torch.inference_mode():
        mean = denoiser.data_mean.to(device, torch.float64).expand(n, *process.shape)
        logit_z = process.draw(mean, alphas[0], source.randn(process.noise_shape(1)[1:]))
        pairs = list(zip(alphas[:-1], alphas[1:], strict=True))
        for i, (a_t, a_s) in enumerate(tqdm(pairs, desc="beta", leave=False, disable=not progress)):
            t_logit = torch.full((1,), _logit(a_t), dtype=torch.float64, device=device)
            x0_hat = denoiser(logit_z, t_logit)
            if callback is not None:  # the state at alpha_t and its denoised estimate
                callback({"i": i, "alpha": a_t, "logit_z": logit_z, "x0": x0_hat})
            logit_p = logit_beta(
                *process.reverse(x0_hat, a_t, a_s), source.randn(process.noise_shape(1)[1:])
            )
            logit_z = process.step(logit_z, logit_p)
        images = process.from_unit(x0_hat)
    images = images.float().clamp(-1, 1)  # float32 rounding at the range's ends
    return SampleResult(x0_hat.float(), images, steps, time.perf_counter() - began)
