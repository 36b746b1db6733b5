"""KL divergences between Beta distributions, written through Gamma KLs (float64).

With unit-rate Gammas, ``KL(Gamma(a) || Gamma(c)) = (a - c) psi(a) - lgamma(a) + lgamma(c)``, and
since ``Beta(a, b)`` is ``G_a / (G_a + G_b)``,

    KL(Beta(a, b) || Beta(c, d)) = KG(a, c) + KG(b, d) - KG(a + b, c + d).

Concentrations reach ``eta = 1e4``, where lgamma is ~1e5: the differences are taken in float64.
"""

from __future__ import annotations

import torch

from nudiff.beta.gamma import TINY_SHAPE


def kl_gamma(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``KL(Gamma(a, 1) || Gamma(c, 1))`` elementwise, float64."""
    a, c = a.double().clamp_min(TINY_SHAPE), c.double().clamp_min(TINY_SHAPE)
    return (a - c) * torch.digamma(a) - torch.lgamma(a) + torch.lgamma(c)


def kl_beta(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``KL(Beta(a, b) || Beta(c, d))`` elementwise, float64, >= 0 (rounding clamped)."""
    kl = kl_gamma(a, c) + kl_gamma(b, d) - kl_gamma(a + b, c + d)
    return kl.clamp_min(0.0)
