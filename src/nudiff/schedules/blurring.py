"""Blurring diffusion (Hoogeboom & Salimans 2022): heat dissipation in the DCT basis, then noise.

Blurring an image with the heat equation for a time ``tau`` multiplies its DCT component
``(c, k_h, k_w)`` by ``exp(-omega^2 tau)``, ``omega^2 = pi^2 (k_h^2 / H^2 + k_w^2 / W^2)``: a
Gaussian blur of standard deviation ``sqrt(2 tau)`` pixels with reflective boundaries. Blurring
diffusion blurs more and more as it adds noise, so every frequency gets a schedule of its own
and fine detail is lost (and generated) at lower noise levels than coarse structure.
"""

from __future__ import annotations

import math

import torch

from nudiff.schedules.base import as_times, vp_from_log_snr
from nudiff.schedules.component import PerComponent
from nudiff.schedules.scalar import VPCosine


def dct_dissipation_rates(shape) -> torch.Tensor:
    """``omega^2 = pi^2 (k_h^2 / H^2 + k_w^2 / W^2)`` ``(C, H, W)`` (float64) of the DCT basis
    component ``(c, k_h, k_w)`` (:class:`~nudiff.bases.DCT`): the heat equation's decay rate of
    that frequency."""
    c, h, w = (int(s) for s in shape)
    kh = torch.arange(h, dtype=torch.float64).view(h, 1) / h
    kw = torch.arange(w, dtype=torch.float64).view(1, w) / w
    return (math.pi**2 * (kh**2 + kw**2)).expand(c, h, w).clone()


class BlurringDiffusion(PerComponent):
    """Blurring diffusion on the components of the DCT basis, exactly as the paper writes it:

        u_t,i = alpha(t) d_i(t) u_0,i + sigma(t) eps_i,

    ``d_i(t) = (1 - min_scale) exp(-omega_i^2 tau(t)) + min_scale`` (``omega_i^2`` from
    :func:`dct_dissipation_rates`), ``tau(t) = sigma_B(t)^2 / 2`` with the blur's standard
    deviation ``sigma_B(t) = blur_sigma_max sin^2(pi t / 2)`` in pixels, and ``alpha``,
    ``sigma`` the VP cosine schedule between ``log_snr_max`` (t = 0) and ``log_snr_min``
    (t = 1). ``min_scale`` keeps every frequency's ``alpha_i`` away from 0, for numerical
    stability. The log-SNR of component ``i`` is ``lambda(t) + 2 log d_i(t)``: low frequencies
    keep the cosine's, high ones fall faster. ``blur_sigma_max = 0`` is :class:`VPCosine`.

    Not variance preserving per component: ``alpha_i = alpha d_i`` and ``sigma_i = sigma``, so
    ``alpha_i^2 + sigma_i^2 < 1`` once a frequency is blurred, and the prior at t = 1 is
    ``N(0, alpha(1)^2 d_i(1)^2 + sigma(1)^2)`` per component. The samplers, losses, denoiser
    and likelihoods work with any per-component ``alpha_i, sigma_i`` and their derivatives, so
    the process is used as it is; its VP reparametrisation (the same log-SNRs with
    ``alpha_i^2 + sigma_i^2 = 1``) would be the same model up to a known per-component scaling
    of ``u_t``. ``t`` is clamped to ``[0, 1]`` (as in :class:`VPCosine`).

    Components with the same frequency ``omega_i^2`` (every channel, and ``(k_h, k_w)`` and
    ``(k_w, k_h)`` of a square image) share a schedule: :meth:`classes`, :meth:`restrict`.

    Args:
        shape: ``(C, H, W)`` of the DCT components.
        blur_sigma_max: the blur's standard deviation at t = 1, in pixels (the paper: 20).
        min_scale: the floor of ``d_i`` (the paper: 0.001), in ``(0, 1)``.
        log_snr_min, log_snr_max: the noise schedule's log-SNR at t = 1 and t = 0.
    """

    def __init__(
        self,
        shape,
        blur_sigma_max: float = 20.0,
        min_scale: float = 0.001,
        log_snr_min: float = -10.0,
        log_snr_max: float = 10.0,
    ):
        if not blur_sigma_max >= 0:
            raise ValueError(f"blur_sigma_max must be >= 0, got {blur_sigma_max}")
        if not 0 < min_scale < 1:
            raise ValueError(f"min_scale must be in (0, 1), got {min_scale}")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape}")
        super().__init__(shape)
        self.noise = VPCosine(log_snr_min, log_snr_max)
        self.blur_sigma_max, self.min_scale = float(blur_sigma_max), float(min_scale)
        self.log_snr_min, self.log_snr_max = self.noise.log_snr_min, self.noise.log_snr_max
        self.register_buffer("omega2", dct_dissipation_rates(shape), persistent=False)

    def _scale(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``d_i(t)`` and ``d_i'(t)``, ``(B, C, H, W)`` in the buffers' dtype."""
        t = self._bt(t, self.omega2).clamp(0, 1)
        half = 0.5 * math.pi * t
        sin, cos = torch.sin(half), torch.cos(half)
        tau = 0.5 * self.blur_sigma_max**2 * sin**4
        dtau = math.pi * self.blur_sigma_max**2 * sin**3 * cos
        decay = (1 - self.min_scale) * torch.exp(-self.omega2 * tau)
        return decay + self.min_scale, -self.omega2 * dtau * decay

    def dissipation(self, t) -> torch.Tensor:
        """The blur's scaling ``d_i(t)`` of every component, ``(B, C, H, W)``."""
        t = as_times(t)
        return self._scale(t)[0].to(t.dtype)

    def _noise(self, t: torch.Tensor):
        """The cosine's ``alpha, sigma, alpha', sigma'``, each ``(B, 1, 1, 1)``."""
        t = t.to(self.omega2.dtype)
        coefficients = vp_from_log_snr(self.noise._log_snr(t), self.noise._dlog_snr(t))
        return (x.view(-1, 1, 1, 1) for x in coefficients)

    def alpha_sigma(self, t):
        t = as_times(t)
        a, s, _, _ = self._noise(t)
        alpha = a * self._scale(t)[0]
        return alpha.to(t.dtype), s.expand_as(alpha).to(t.dtype)

    def derivatives(self, t):
        t = as_times(t)
        a, _, da, ds = self._noise(t)
        d, dd = self._scale(t)
        dalpha = da * d + a * dd
        return dalpha.to(t.dtype), ds.expand_as(dalpha).to(t.dtype)

    def log_snr(self, t):
        t = as_times(t)
        lam = self.noise._log_snr(t.to(self.omega2.dtype)).view(-1, 1, 1, 1)
        return (lam + 2 * torch.log(self._scale(t)[0])).to(t.dtype)

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, blur_sigma_max={self.blur_sigma_max}, "
            f"min_scale={self.min_scale}, log_snr=[{self.log_snr_min}, {self.log_snr_max}]"
        )
