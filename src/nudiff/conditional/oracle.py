"""Exact conditional denoisers of a Gaussian random field for x2 super-resolution.

The field is diagonal in the 1-level Haar basis, so ``y = avg_pool(x, 2)`` is its approximation
band divided by 2 and the detail bands are independent of ``y``. This gives the exact answer of
every estimator, to test conditional samplers and to measure what the joint estimators' sampling
approximation (``y_t`` for ``y``) costs when the scores are exact; on a multi-speed schedule the
same answers per scale make an exact conditional multi-scale model
(:func:`multiscale_sr_oracle`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nudiff.bases import Haar
from nudiff.conditional.estimators import ConditionalDenoiser, ConditionalMultiScale
from nudiff.conditional.tasks import SuperResolution
from nudiff.models.multiscale import coarse_process, stages
from nudiff.oracle import DiagonalGaussian, GaussianOracle, field_model
from nudiff.process import Process
from nudiff.schedules import MultiSpeed, VPCosine


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

    ``process`` and ``data``: another (float64) process whose components start with the
    approximation band (top-left ``(H/2, W/2)`` block; e.g. a scale of a multi-scale model)
    and the field in its basis; default: the 1-level Haar basis of ``shape`` with VP cosine.
    """

    def __init__(
        self,
        estimator: str,
        shape=(1, 8, 8),
        y_log_snr_min: float = -1.0,
        process: Process | None = None,
        data: DiagonalGaussian | None = None,
    ):
        super().__init__()
        self.shape = tuple(shape)
        self.task = SuperResolution(2)
        if process is None:
            haar = Haar(self.shape, 1)
            process, data = Process(haar, VPCosine()).double(), field_model(self.shape, basis=haar)
        self.process, self.data = process, data
        self.oracle = GaussianOracle(process, data)
        self.ref = ConditionalDenoiser(  # y's schedule, nothing else
            process,
            self.task,
            _Zero(),
            estimator,
            y_log_snr_min=y_log_snr_min,
            image_shape=self.shape,
        )
        self.joint, self.estimator = self.ref.joint, estimator
        self.y_shape, self.sigma_data = self.ref.y_shape, self.ref.sigma_data

    def set_step(self, step: int | None) -> None:
        """Nothing to anneal: y's schedule is the target one."""

    def forward(self, u, t, y, y_t=None, noise=None):
        x0 = self.oracle(u, t).clone()
        h, w = y.shape[-2:]  # the approximation band: 2 y
        if not self.joint:
            x0[..., :h, :w] = 2 * y
            return x0
        if y_t is None:
            eps = noise.randn(y.shape[1:], u.dtype).to(y) if noise is not None else None
            y_t = self.ref.diffuse_y(y, t, torch.randn_like(y) if eps is None else eps)
        alpha, sigma = self.process.coefficients(t, u)
        ay, sy = self.ref.y_coefficients(t, y)
        m, v = self.oracle.m[..., :h, :w], self.oracle.w[..., :h, :w]
        a, s = alpha[..., :h, :w], sigma[..., :h, :w]
        precision = 1 / v + a**2 / s**2 + (ay / 2) ** 2 / sy**2
        mean = m / v + a * u[..., :h, :w] / s**2 + (ay / 2) * y_t / sy**2
        x0[..., :h, :w] = mean / precision
        return x0


def multiscale_sr_oracle(
    estimator: str,
    shape=(1, 8, 8),
    y_log_snr_min: float = -1.0,
    finishing_times: Sequence[float] | None = None,
) -> ConditionalMultiScale:
    """The exact conditional multi-scale model of the field: the 1-level Haar basis with
    MSDiff's multi-speed schedule (the detail band finishes at ``finishing_times[0]``, default
    0.5), one :class:`GaussianSROracle` per scale on its sub-process (the coarse scale sees
    only the approximation band, which ``y`` determines)."""
    haar = Haar(tuple(shape), 1)
    process = Process(haar, MultiSpeed(haar.level_map() - 1, finishing_times)).double()
    data = field_model(tuple(shape), basis=haar)
    scales = []
    for d in stages(process)[1]:
        sub = coarse_process(process, d).double()
        _, h, w = sub.shape
        sub_data = DiagonalGaussian(sub.basis, data.mean[..., :h, :w], data.var[..., :h, :w])
        scales.append(GaussianSROracle(estimator, shape, y_log_snr_min, sub, sub_data))
    return ConditionalMultiScale(process, scales)
