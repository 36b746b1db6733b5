"""Samplers on Gaussian data diagonal in the basis, in closed form.

There the exact denoiser (:class:`~nudiff.oracle.GaussianOracle`) is affine in ``u`` per
component, so a deterministic sampler maps its start ``u_1`` to ``x0 = g * u_1 + c`` per
component: two runs (``u_1 = 0`` and ``u_1 = std``) give ``g`` and ``c`` exactly, with no
Monte-Carlo noise. The exact probability-flow ODE keeps ``(u_t - alpha_t m) / sd_t`` constant
(``sd_t^2 = alpha_t^2 w + sigma_t^2``), which gives the exact map to compare with.
"""

from __future__ import annotations

import torch

from nudiff.process import Process


def sampler_map(
    sampler, oracle, process: Process, ts: torch.Tensor, options: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, c)`` ``(C, H, W)`` of deterministic ``sampler`` (a function of
    :data:`nudiff.samplers.SAMPLERS`) on grid ``ts``, with the final denoising, in the oracle's
    dtype: its output is ``g * u_1 + c`` per component."""
    like = oracle.w
    std = process.prior_variance().to(like)[0].sqrt()
    u = torch.stack([torch.zeros_like(std), std])
    out = sampler(oracle, process, u, ts.to(like), **(options or {}))
    return (out[1] - out[0]) / std, out[0]


def exact_map(oracle, process: Process, ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, c)`` of the exact PF-ODE from ``ts[0]`` to ``ts[-1]`` followed by the exact
    denoiser there: ``u_1`` is read as a draw of the marginal at ``ts[0]``."""
    like = oracle.w
    t0, t1 = ts[:1].to(like), ts[-1:].to(like)
    (m0, v0), (m1, v1) = oracle.marginal(t0, like), oracle.marginal(t1, like)
    gain = (v1 / v0).sqrt()[0]  # u at ts[-1] = m1 + gain (u_1 - m0)
    alpha, _ = process.coefficients(t1, like)
    slope = (alpha * oracle.w / v1)[0]  # the exact denoiser's gain at ts[-1]
    g = slope * gain
    c = oracle.m + slope * (m1[0] - gain * m0[0] - alpha[0] * oracle.m)
    return g, c


def map_error(
    sampler, oracle, process: Process, ts: torch.Tensor, options: dict | None = None
) -> float:
    """The largest relative error of the sampler's output variance against the exact
    PF-ODE's, ``max_i |g_i^2 / g_exact,i^2 - 1|``: the sampler's own error, without the
    error the grid's ends leave (they are the same for both)."""
    g, _ = sampler_map(sampler, oracle, process, ts, options)
    g_exact, _ = exact_map(oracle, process, ts)
    return ((g / g_exact) ** 2 - 1).abs().max().item()
