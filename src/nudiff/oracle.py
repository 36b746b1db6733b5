"""Exact oracle for Gaussian data diagonal in the basis, and Gaussian random fields.

For data ``z = B(x) ~ N(mu, diag(v))`` the whitened components are ``u_0 ~ N(m, diag(w))`` with
``m = (mu - prior.mean) / scale``, ``w = v / scale^2``, every marginal is Gaussian per component,
``u_t ~ N(alpha m, alpha^2 w + sigma^2)``, and the posterior mean is

    E[u_0 | u_t] = m + alpha w (u_t - alpha m) / (alpha^2 w + sigma^2).

This makes every basis x schedule x sampler combination checkable against closed forms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nudiff._checks import check_images
from nudiff.bases import DCT, Basis
from nudiff.process import Process


class DiagonalGaussian(nn.Module):
    """Data ``x = B^T z`` with ``z ~ N(mean, diag(var))`` in the components of ``basis``."""

    def __init__(self, basis: Basis, mean: torch.Tensor | None, var: torch.Tensor):
        super().__init__()
        var = torch.as_tensor(var).double()
        if tuple(var.shape) != basis.shape or not (var > 0).all():
            raise ValueError(f"var must be positive with shape {basis.shape}")
        mean = torch.zeros_like(var) if mean is None else torch.as_tensor(mean).double()
        self.basis = basis
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)

    @property
    def shape(self):
        return self.basis.shape

    def sample_components(
        self, n: int, generator: torch.Generator | None = None, dtype=torch.float64
    ) -> torch.Tensor:
        eps = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        return (self.mean + self.var.sqrt() * eps).to(dtype)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32):
        """``n`` images ``(n, C, H, W)``."""
        return self.basis.inverse(self.sample_components(n, generator)).to(dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of images ``(B, C, H, W)`` -> ``(B,)`` (orthonormal: no Jacobian)."""
        check_images(x, self.shape, "x")
        z = self.basis(x.double())
        lp = -0.5 * ((z - self.mean) ** 2 / self.var + torch.log(2 * math.pi * self.var))
        return lp.flatten(1).sum(1)


class GaussianOracle(nn.Module):
    """Exact denoiser, score, marginals and likelihoods of a :class:`DiagonalGaussian` under a
    :class:`~nudiff.process.Process` that uses the same basis.

    It is a denoiser in the sense the samplers use: ``oracle(u_t, t) -> E[u_0 | u_t]``.
    """

    def __init__(self, process: Process, data: DiagonalGaussian):
        super().__init__()
        if process.shape != data.shape:
            raise ValueError(f"process shape {process.shape} != data shape {data.shape}")
        self.process, self.data = process, data
        s = process.prior.scale.double()
        self.register_buffer("m", (data.mean - process.prior.mean.double()) / s)
        self.register_buffer("w", data.var / s**2)

    def marginal(self, t, like: torch.Tensor | None = None):
        """Mean and variance of ``u_t`` per component, ``(B, C, H, W)`` each."""
        alpha, sigma = self.process.coefficients(t, like)
        m, w = self.m.to(alpha.dtype), self.w.to(alpha.dtype)
        return alpha * m, alpha**2 * w + sigma**2

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        """Exact ``E[u_0 | u_t = u]`` ``(B, C, H, W)``."""
        alpha, sigma = self.process.coefficients(t, u)
        m, w = self.m.to(u.dtype), self.w.to(u.dtype)
        return m + alpha * w * (u - alpha * m) / (alpha**2 * w + sigma**2)

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        mean, var = self.marginal(t, u)
        return -(u - mean) / var

    def transport(self, u: torch.Tensor, t, s) -> torch.Tensor:
        """The exact probability-flow ODE map from time ``t`` to time ``s`` of states ``u``
        ``(B, C, H, W)`` (any states, not only draws of the marginal).

        The PF-ODE of Gaussian marginals keeps each standardised coordinate
        ``(u - mean_t) / std_t`` fixed, so ``u_s = mean_s + std_s / std_t (u - mean_t)``: the
        reference deterministic samplers are measured against.
        """
        mean_t, var_t = self.marginal(t, u)
        mean_s, var_s = self.marginal(s, u)
        return mean_s + (var_s / var_t).sqrt() * (u - mean_t)

    def sample_u0(self, n: int, generator=None, dtype=torch.float64) -> torch.Tensor:
        """Exact draws of whitened clean components ``(n, C, H, W)``."""
        eps = torch.randn((n, *self.data.shape), generator=generator, dtype=torch.float64)
        return (self.m + self.w.sqrt() * eps).to(dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact data log-density (nats) of images ``(B, C, H, W)`` -> ``(B,)``."""
        return self.data.log_prob(x)

    def flow_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density that the probability-flow ODE with the exact score assigns to ``x``.

        Per component the PF-ODE is the affine map that takes ``N(m, w)`` at t = 0 to
        ``N(alpha_1 m, alpha_1^2 w + sigma_1^2)`` at t = 1; the model density is the prior
        ``N(0, alpha_1^2 + sigma_1^2)`` pulled back through it. It equals :meth:`log_prob` up
        to the prior mismatch at t = 1 (negligible when ``alpha_1`` is).
        """
        check_images(x, self.data.shape, "x")
        u0 = self.process.encode(x.double())
        one = torch.ones(1, dtype=torch.float64)
        mean1, var1 = self.marginal(one)
        gain = (var1 / self.w).sqrt()
        u1 = mean1 + gain * (u0 - self.m)
        pvar = self.process.prior_variance().double()
        lp = -0.5 * (u1**2 / pvar + torch.log(2 * math.pi * pvar)) + torch.log(gain)
        # the whitening is a diagonal affine map of z: its Jacobian is 1 / scale
        lp = lp - torch.log(self.process.prior.scale.double())
        return lp.expand_as(u0).flatten(1).sum(1)


def power_law_variance(
    basis: Basis, exponent: float = 2.0, total: float | None = None, cutoff: float | None = None
) -> torch.Tensor:
    """Per-component variance ``(f^2 + f_c^2)^(-exponent / 2)`` from the basis' frequency label.

    ``f_c`` (default: the lowest non-zero frequency of a 1-D axis of the image) keeps the
    zero frequency finite. Normalised so the mean variance per component (= per pixel, the basis
    being orthonormal) is ``total`` (default 1).
    """
    if exponent < 0:
        raise ValueError(f"exponent must be >= 0, got {exponent}")
    f = basis.labels()["frequency"].double()
    if cutoff is None:
        cutoff = 1.0 / (2 * max(basis.shape[1:]))
    var = (f**2 + cutoff**2) ** (-exponent / 2)
    return var * ((total or 1.0) / var.mean())


def gaussian_random_field(
    n: int, shape, exponent: float = 2.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` stationary Gaussian random fields ``(n, C, H, W)`` with power spectrum
    ``P(k) ~ |k|^-exponent``, unit variance per pixel on average, independent channels.

    Drawn in the DCT basis (in which such fields are close to diagonal, exactly diagonal for
    reflective boundary conditions), so :func:`field_model` gives their exact oracle.
    """
    return field_model(shape, exponent).sample(n, generator)


def field_model(shape, exponent: float = 2.0, basis: Basis | None = None) -> DiagonalGaussian:
    """The :class:`DiagonalGaussian` of power-law fields in ``basis`` (default DCT)."""
    basis = basis if basis is not None else DCT(shape)
    return DiagonalGaussian(basis, None, power_law_variance(basis, exponent))
