"""Gamma and Beta draws in log / logit space from pre-drawn standard normals.

The trainer draws a loss's randomness before it sees the data (:class:`~nudiff.training.protocols.
Loss`), and a sampler's noise must not depend on the batch a sample is drawn in; but a Gamma
draw's rejection sampler consumes a number of random numbers that depends on its shape. So the
randomness is fixed in advance: each Gamma variate gets ``PROPOSALS`` Marsaglia-Tsang proposals
(a normal and, through ``log Phi``, a uniform each) and one more normal for the shape boost, and
the first accepted proposal is kept. A shape-1 proposal is rejected with probability < 0.05, so
all ``PROPOSALS`` are rejected with probability < 0.05^5 (about 3e-7 per variate); then the
proposal-free value (the mode of the boosted Gamma) stands in.

The proposals of ``Gamma(k + 1)`` are well scaled and run in float32 (as torch's own Gamma
sampler does); the result is assembled in float64 in log space, so shapes as small as ``1e-30``
give log-Gamma draws around ``-1e30`` instead of underflowing to ``log 0`` (upstream's NaN).
"""

from __future__ import annotations

import torch

PROPOSALS = 5
NORMALS_PER_GAMMA = 2 * PROPOSALS + 1
TINY_SHAPE = 1e-30  # shapes are clamped here: Gamma(0) is a point mass at 0


def log_gamma(shape: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``log G`` with ``G ~ Gamma(shape, 1)``, as a function of ``normals`` ``(*S,
    NORMALS_PER_GAMMA)`` for ``shape`` ``(*S)`` (broadcastable); float64 ``(*S)``.

    Marsaglia & Tsang (2000) for ``Gamma(shape + 1)``, boosted to ``shape`` by
    ``G(k) = G(k + 1) U^(1/k)`` (exact for every ``k > 0``; in log space ``log U / k``).
    """
    k = shape.double().clamp_min(TINY_SHAPE)
    z = normals.float()
    x = z[..., :PROPOSALS]
    log_u = torch.special.log_ndtr(z[..., PROPOSALS : 2 * PROPOSALS])  # log of a uniform
    log_boost = torch.special.log_ndtr(z[..., -1].double())
    d = k + 2.0 / 3.0  # (k + 1) - 1/3
    d32 = d.float()[..., None]
    v = (1.0 + x * torch.rsqrt(9.0 * d32)) ** 3
    log_v = torch.log(v.clamp_min(1e-30))
    accept = (v > 0) & (log_u < 0.5 * x * x + d32 * (1.0 - v + log_v))
    # the first accepted proposal; none accepted (p < 3e-7): v = 1
    log_v = torch.cat([log_v, torch.zeros_like(log_v[..., :1])], -1)
    accept = torch.cat([accept, torch.ones_like(accept[..., :1])], -1)
    first = accept.byte().argmax(-1, keepdim=True)
    log_v = log_v.gather(-1, first)[..., 0].double()
    return torch.log(d) + log_v + log_boost / k


def logit_beta(a: torch.Tensor, b: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``logit p`` with ``p ~ Beta(a, b)``, i.e. ``log G_a - log G_b`` for independent Gamma
    variates; ``normals`` ``(*S, 2, NORMALS_PER_GAMMA)``; float64 ``(*S)``."""
    return log_gamma(a, normals[..., 0, :]) - log_gamma(b, normals[..., 1, :])


def beta_noise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the normals one Beta draw per entry of a ``shape`` tensor needs."""
    return (*shape, 2, NORMALS_PER_GAMMA)
