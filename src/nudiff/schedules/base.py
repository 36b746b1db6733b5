"""Schedules: alpha(t), sigma(t) and their t-derivatives, per component.

A schedule maps times ``t`` of shape ``(B,)`` to coefficients that broadcast against components
``(B, C, H, W)``: scalar schedules return ``(B, 1, 1, 1)``, per-component schedules
``(B, C, H, W)``. Times run from 0 (data) to 1 (prior).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def as_times(t, like: torch.Tensor | None = None) -> torch.Tensor:
    """Times as a 1-D tensor ``(B,)`` (a float or 0-d tensor becomes ``(1,)``)."""
    t = torch.as_tensor(t, dtype=None if like is None else like.dtype)
    if like is not None:
        t = t.to(like.device)
    if not t.is_floating_point():
        t = t.float()
    if t.dim() == 0:
        t = t.view(1)
    if t.dim() != 1:
        raise ValueError(f"t must be a scalar or have shape (B,), got {tuple(t.shape)}")
    return t


class Schedule(nn.Module):
    """Base class. Subclasses implement :meth:`alpha_sigma` and :meth:`derivatives`.

    Attributes:
        t_min: smallest time at which the schedule is finite (sampling stops there).
        inactive_log_snr: a component whose log-SNR is at or below this is fully noised: its
            exact score is the prior score and no network needs to see it.
    """

    t_min: float = 0.0
    inactive_log_snr: float = -math.inf
    #: (C, H, W) for per-component schedules, None for scalar ones
    shape: tuple[int, int, int] | None = None

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d alpha / dt, d sigma / dt)``, shaped like :meth:`alpha_sigma`."""
        raise NotImplementedError

    def log_snr(self, t) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``."""
        alpha, sigma = self.alpha_sigma(t)
        return 2 * (torch.log(alpha) - torch.log(sigma))

    def prior_variance(self) -> torch.Tensor:
        """Variance of the prior at t = 1 for unit-variance whitened data, ``alpha^2 + sigma^2``
        (shape ``(1, 1, 1, 1)`` or ``(1, C, H, W)``)."""
        alpha, sigma = self.alpha_sigma(torch.ones(1, dtype=torch.float64))
        return alpha**2 + sigma**2

    def breakpoints(self) -> list[float]:
        """Times in ``(0, 1)`` where some component's log-SNR has a kink (a window starts or
        ends), increasing. Adaptive solvers restart there and per-interval step budgets default
        to these intervals; smooth schedules have none."""
        return []

    def forward(self, t):
        return self.alpha_sigma(t)


class ScalarSchedule(Schedule):
    """The same alpha, sigma for every component; subclasses return ``(B,)`` tensors via
    :meth:`_alpha_sigma` / :meth:`_derivatives` and may give a closed-form inverse."""

    def alpha_sigma(self, t):
        a, s = self._alpha_sigma(as_times(t))
        return a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)

    def derivatives(self, t):
        da, ds = self._derivatives(as_times(t))
        return da.view(-1, 1, 1, 1), ds.view(-1, 1, 1, 1)

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        """Closed-form inverse of :meth:`log_snr`: ``(B,)`` log-SNRs -> ``(B,)`` times."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    def _alpha_sigma(self, t):
        raise NotImplementedError

    def _derivatives(self, t):
        raise NotImplementedError


def vp_from_log_snr(lam: torch.Tensor, dlam: torch.Tensor):
    """Variance-preserving coefficients from log-SNR ``lam`` and its t-derivative ``dlam``.

    ``alpha^2 = sigmoid(lam)``, ``sigma^2 = sigmoid(-lam)``, so ``alpha' = alpha sigma^2 lam' / 2``
    and ``sigma' = -sigma alpha^2 lam' / 2``. Returns ``alpha, sigma, dalpha, dsigma``.
    """
    a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
    alpha, sigma = a2.sqrt(), s2.sqrt()
    # where lam' = 0 (a clipped, frozen component) the products must be exactly 0, also at +-inf
    dalpha = torch.where(dlam == 0, 0.0, 0.5 * alpha * s2 * dlam)
    dsigma = torch.where(dlam == 0, 0.0, -0.5 * sigma * a2 * dlam)
    return alpha, sigma, dalpha, dsigma
