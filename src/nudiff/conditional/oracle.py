"""Exact conditional denoisers of a Gaussian random field for x2 super-resolution.

The field is diagonal in the 1-level Haar basis, so ``y = avg_pool(x, 2)`` is its approximation
band divided by 2 and the detail bands are independent of ``y``. This gives the exact answer of
every estimator, to test conditional samplers and to measure what the joint estimators' sampling
approximation (``y_t`` for ``y``) costs when the scores are exact.
"""

from __future__ import annotations

import torch
from torch import nn

from nudiff.bases import Haar
from nudiff.conditional.estimators import ConditionalDenoiser
from nudiff.conditional.tasks import SuperResolution
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.schedules import VPCosine


class _Zero(nn.Module):
    def forward(self, x, c):
        return torch.zeros_like(x)


class GaussianSROracle(nn.Module):
    """Called like a :class:`~nudiff.conditional.estimators.ConditionalDenoiser`:
    ``(u_t, t, y[, y_t, noise]) -> x0`` estimate ``(B, C, H, W)`` (float64 process).

    ``cde``: ``E[u_0 | u_t, y]``: the approximation band is ``2 y`` exactly, the detail bands get
    the plain oracle. Joint estimators: ``E[u_0 | u_t, y_t]`` of the jointly Gaussian
    ``(u_0, y_t)``, whose approximation band is observed twice (in ``u_t`` and in ``y_t``),
    with ``y``'s schedule of a ``ConditionalDenoiser`` of the same estimator.
    """

    def __init__(self, estimator: str, shape=(1, 8, 8), y_log_snr_min: float = -1.0):
        super().__init__()
        haar = Haar(shape, 1)
        self.shape = tuple(shape)
        self.process = Process(haar, VPCosine()).double()
        self.data = field_model(self.shape, basis=haar)
        self.oracle = GaussianOracle(self.process, self.data)
        self.task = SuperResolution(2)
        self.ref = ConditionalDenoiser(  # y's schedule, nothing else
            self.process, self.task, _Zero(), estimator, y_log_snr_min=y_log_snr_min
        )
        self.joint = self.ref.joint

    def forward(self, u, t, y, y_t=None, noise=None):
        x0 = self.oracle(u, t).clone()
        h, w = self.shape[1] // 2, self.shape[2] // 2
        if not self.joint:
            x0[..., :h, :w] = 2 * y
            return x0
        if y_t is None:
            eps = noise.randn(y.shape[1:], u.dtype).to(y) if noise is not None else None
            y_t = self.ref.diffuse_y(y, t, torch.randn_like(y) if eps is None else eps)
        alpha, sigma = self.process.coefficients(t, u)
        ay, sy = self.ref.y_coefficients(t, y)
        m, v = self.oracle.m[..., :h, :w], self.oracle.w[..., :h, :w]
        a, s = alpha[..., :1, :1], sigma[..., :1, :1]
        precision = 1 / v + a**2 / s**2 + (ay / 2) ** 2 / sy**2
        mean = m / v + a * u[..., :h, :w] / s**2 + (ay / 2) * y_t / sy**2
        x0[..., :h, :w] = mean / precision
        return x0
