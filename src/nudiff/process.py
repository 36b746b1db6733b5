"""The linear non-uniform diffusion process.

In whitened components ``u = (B(x) - mean) / scale`` every component follows its own

    u_t,i = alpha_i(t) u_0,i + sigma_i(t) eps_i,     eps ~ N(0, I),

with SDE drift ``f_i = alpha_i' / alpha_i`` and ``g_i^2 = d(sigma_i^2)/dt - 2 f_i sigma_i^2``,
reverse SDE ``du = (f u - g^2 score) dt + g dw`` and probability-flow ODE
``du/dt = f u - g^2 score / 2``. The prior at t = 1 is ``N(0, alpha(1)^2 + sigma(1)^2)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nudiff._checks import check_images
from nudiff.bases import Basis
from nudiff.prior import Prior
from nudiff.schedules import Schedule, as_times


class Process(nn.Module):
    """Basis + prior + schedule. All component tensors are ``(B, C, H, W)``, times ``(B,)``."""

    def __init__(self, basis: Basis, schedule: Schedule, prior: Prior | None = None):
        super().__init__()
        prior = prior if prior is not None else Prior.white(basis.shape)
        if prior.shape != basis.shape:
            raise ValueError(f"prior shape {prior.shape} != basis shape {basis.shape}")
        if schedule.shape is not None and tuple(schedule.shape) != basis.shape:
            raise ValueError(f"schedule shape {schedule.shape} != basis shape {basis.shape}")
        self.basis, self.schedule, self.prior = basis, schedule, prior

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.basis.shape

    @property
    def t_min(self) -> float:
        return self.schedule.t_min

    # ------------------------------------------------------------------ data <-> components
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> whitened components ``u``."""
        return self.prior.whiten(self.basis(x))

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Whitened components -> images."""
        return self.basis.inverse(self.prior.unwhiten(u))

    # ---------------------------------------------------------------------- coefficients
    def coefficients(self, t, like: torch.Tensor | None = None):
        """``alpha, sigma`` at times ``t`` ``(B,)``, broadcastable to ``(B, C, H, W)``."""
        return self.schedule.alpha_sigma(as_times(t, like))

    def derivatives(self, t, like: torch.Tensor | None = None):
        return self.schedule.derivatives(as_times(t, like))

    def log_snr(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        return self.schedule.log_snr(as_times(t, like))

    def sde(self, t, like: torch.Tensor | None = None):
        """Drift coefficient ``f`` and squared diffusion ``g^2`` of the forward SDE."""
        t = as_times(t, like)
        alpha, sigma = self.schedule.alpha_sigma(t)
        dalpha, dsigma = self.schedule.derivatives(t)
        f = dalpha / alpha
        g2 = 2 * sigma * dsigma - 2 * f * sigma**2
        return f, g2.clamp_min(0)

    # --------------------------------------------------------------------------- forward
    def marginal(self, u0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """Sample ``u_t = alpha u0 + sigma eps``."""
        alpha, sigma = self.coefficients(t, u0)
        return alpha * u0 + sigma * eps

    # ----------------------------------------------------------------------------- prior
    def prior_variance(self) -> torch.Tensor:
        """``alpha(1)^2 + sigma(1)^2``, ``(1, 1, 1, 1)`` or ``(1, C, H, W)``."""
        return self.schedule.prior_variance()

    def prior_sample(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32
    ) -> torch.Tensor:
        """``n`` draws ``(n, C, H, W)`` from the prior at t = 1."""
        eps = torch.randn((n, *self.shape), generator=generator, device=device, dtype=dtype)
        return eps * self.prior_variance().to(device=device, dtype=dtype).sqrt()

    def prior_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior at ``u`` ``(B, C, H, W)`` -> ``(B,)``."""
        check_images(u, self.shape, "u")
        var = self.prior_variance().to(u)
        lp = -0.5 * (u**2 / var + torch.log(2 * math.pi * var))
        return lp.expand_as(u).flatten(1).sum(1)

    def prior_score(self, u: torch.Tensor) -> torch.Tensor:
        return -u / self.prior_variance().to(u)

    # ------------------------------------------------------------------------- reverse
    def score_from_x0(self, u, t, x0) -> torch.Tensor:
        alpha, sigma = self.coefficients(t, u)
        return (alpha * x0 - u) / sigma**2

    def reverse_sde_drift(self, u, t, score) -> torch.Tensor:
        """``f u - g^2 score``: drift of the reverse-time SDE (integrated backwards in t)."""
        f, g2 = self.sde(t, u)
        return f * u - g2 * score

    def pf_ode_drift(self, u, t, score) -> torch.Tensor:
        """``du/dt = f u - g^2 score / 2`` of the probability-flow ODE."""
        f, g2 = self.sde(t, u)
        return f * u - 0.5 * g2 * score

    def pf_ode_velocity(self, u, t, x0) -> torch.Tensor:
        """The PF-ODE drift written with a denoised ``x0``: ``alpha' x0 + sigma' (u - alpha x0) /
        sigma``. Equal to :meth:`pf_ode_drift` but finite where ``alpha = 0`` (flow matching at
        t = 1)."""
        alpha, sigma = self.coefficients(t, u)
        dalpha, dsigma = self.derivatives(t, u)
        return dalpha * x0 + dsigma * (u - alpha * x0) / sigma

    # ------------------------------------------------------------------------ activity
    def inactive(self, t, t_next=None, like: torch.Tensor | None = None) -> torch.Tensor:
        """Bool mask ``(B, C, H, W)`` (or ``(B, 1, 1, 1)``) of components fully noised at ``t``,
        or over the whole step between ``t`` and ``t_next`` (log-SNR never increases with t, so
        the step's least-noised end decides)."""
        t = as_times(t, like)
        if t_next is not None:
            t = torch.minimum(t, as_times(t_next, t))
        return self.inactive_log_snr(self.schedule.log_snr(t))

    def inactive_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The mask of :meth:`inactive` from log-SNRs already at hand (saves recomputing them).

        Without a finite threshold only ``alpha = 0`` (log-SNR ``-inf``) counts as inactive."""
        threshold = self.schedule.inactive_log_snr
        if threshold == -math.inf:
            return log_snr == -math.inf
        # a relative tolerance absorbs the rounding of a log-SNR clipped exactly at the threshold
        return log_snr <= threshold + 1e-6 * max(1.0, abs(threshold))
