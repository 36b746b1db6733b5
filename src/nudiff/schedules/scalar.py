"""Schedules shared by every component: VP cosine, VP linear-beta, VE, EDM, rectified flow."""

from __future__ import annotations

import math

import torch

from nudiff.schedules.base import ScalarSchedule, as_times, vp_from_log_snr


class _VPScalar(ScalarSchedule):
    """Variance-preserving, defined by its log-SNR ``lambda(t)`` and ``lambda'(t)``."""

    def _log_snr(self, t):
        raise NotImplementedError

    def _dlog_snr(self, t):
        raise NotImplementedError

    def log_snr(self, t):
        return self._log_snr(as_times(t)).view(-1, 1, 1, 1)

    def _alpha_sigma(self, t):
        a, s, _, _ = vp_from_log_snr(self._log_snr(t), self._dlog_snr(t))
        return a, s

    def _derivatives(self, t):
        _, _, da, ds = vp_from_log_snr(self._log_snr(t), self._dlog_snr(t))
        return da, ds


def resolution_shift(resolution: float, base_resolution: float = 64.0) -> float:
    """Simple diffusion's log-SNR shift for images of ``resolution`` pixels a side whose noise
    schedule is right at ``base_resolution``: ``2 log(base_resolution / resolution)``.

    Average-pooling a ``d x d`` image to ``d/s x d/s`` multiplies the SNR of white noise by
    ``s^2``, so a schedule shifted by this amount gives the pooled ``base_resolution`` image
    the SNR the unshifted schedule gives the whole image (negative above the base: more noise).
    """
    if not (resolution > 0 and base_resolution > 0):
        raise ValueError(
            f"resolutions must be > 0, got {resolution} and base_resolution {base_resolution}"
        )
    return 2 * math.log(base_resolution / resolution)


class VPCosine(_VPScalar):
    """Cosine schedule (Nichol & Dhariwal), truncated to ``lambda in [log_snr_min, log_snr_max]``,
    optionally shifted (Hoogeboom, Heek & Salimans 2023, "simple diffusion").

    Unshifted, ``lambda(t) = -2 log tan(a t + b)``: ``alpha = cos``, ``sigma = sin`` of the angle
    ``a t + b``, rescaled so that ``t = 0`` and ``t = 1`` hit the log-SNR limits exactly.

    ``shift`` ``s`` (e.g. :func:`resolution_shift`) adds ``s`` to the log-SNR:
    ``lambda_s(t) = s - 2 log tan(a_s t + b_s)``, with the angle range ``a_s, b_s`` chosen so
    that ``t = 0`` and ``t = 1`` still hit ``log_snr_max`` and ``log_snr_min``. Inside the range
    this is simple diffusion's shifted cosine; only the truncation differs: the paper shifts
    the truncated schedule, limits included. At limits of +-15 and ``|s| <= 3`` the two differ
    by less than 0.03 in log-SNR for ``t`` in ``[0.1, 0.9]``, and by up to ``|s|`` at the ends.

    ``shift_to`` (not None): the interpolated schedule ``lambda(t) = t lambda_shift(t) +
    (1 - t) lambda_shift_to(t)``, from ``shift`` at ``t = 1`` to ``shift_to`` at ``t = 0``
    (e.g. the shifts of base resolutions 32 and 256 for 512 x 512 images: the global layout
    is generated as at 32 x 32, the details as at 256 x 256). ``shift_to >= shift``, so that
    the log-SNR keeps decreasing; its inverse :meth:`t_from_log_snr` is found by bisection
    (to float64 precision, clamped to ``[0, 1]``).
    """

    def __init__(
        self,
        log_snr_min: float = -15.0,
        log_snr_max: float = 15.0,
        shift: float = 0.0,
        shift_to: float | None = None,
    ):
        super().__init__()
        if not log_snr_min < log_snr_max:
            raise ValueError(
                f"log_snr_min must be < log_snr_max, got {log_snr_min} and {log_snr_max}"
            )
        if shift_to is not None and not shift_to >= shift:
            raise ValueError(
                f"the interpolated schedule needs shift_to >= shift (less noise towards t = 0), "
                f"got shift {shift} and shift_to {shift_to}"
            )
        self.log_snr_min, self.log_snr_max = float(log_snr_min), float(log_snr_max)
        self.shift = float(shift)
        self.shift_to = None if shift_to is None else float(shift_to)
        shifts = [self.shift] if shift_to is None else [self.shift, self.shift_to]
        # (a, b, s) per shifted cosine: lambda = s - 2 log tan(a t + b)
        self._pieces = [(*self._angles(s), s) for s in shifts]
        self._a, self._b = self._pieces[0][:2]

    def _angles(self, shift: float) -> tuple[float, float]:
        b = math.atan(math.exp(-0.5 * (self.log_snr_max - shift)))
        return math.atan(math.exp(-0.5 * (self.log_snr_min - shift))) - b, b

    @staticmethod
    def _piece(t, piece):
        a, b, s = piece
        lam = -2 * torch.log(torch.tan(a * t + b))
        return lam + s if s else lam

    @staticmethod
    def _dpiece(t, piece):
        a, b, _ = piece
        return -4 * a / torch.sin(2 * (a * t + b))

    # t is clamped to [0, 1]: adaptive ODE solvers probe a little past their end point, and
    # the angle must stay below pi / 2
    def _log_snr(self, t):
        t = t.clamp(0, 1)
        if self.shift_to is None:
            return self._piece(t, self._pieces[0])
        return t * self._piece(t, self._pieces[0]) + (1 - t) * self._piece(t, self._pieces[1])

    def _dlog_snr(self, t):
        t = t.clamp(0, 1)
        if self.shift_to is None:
            return self._dpiece(t, self._pieces[0])
        start, end = self._pieces  # shift (the lambda of t = 1), shift_to (of t = 0)
        lam_start, lam_end = self._piece(t, start), self._piece(t, end)
        return lam_start - lam_end + t * self._dpiece(t, start) + (1 - t) * self._dpiece(t, end)

    def t_from_log_snr(self, log_snr):
        lam = as_times(log_snr)
        if self.shift_to is None:
            a, b, s = self._pieces[0]
            return (torch.atan(torch.exp(-0.5 * (lam - s))) - b) / a
        # bisection on the decreasing log-SNR: 64 halvings reach float64 resolution
        target = lam.double()
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) > target  # the time lies after mid
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)


class VPLinear(_VPScalar):
    """DDPM / VP-SDE linear beta: ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``alpha^2 = exp(-int_0^t beta)``. Infinite log-SNR at t = 0, hence ``t_min``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-4):
        super().__init__()
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min} and {beta_max}")
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def _integral(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _log_snr(self, t):
        return -torch.log(torch.expm1(self._integral(t)))

    def _dlog_snr(self, t):
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return -beta / -torch.expm1(-self._integral(t))

    def t_from_log_snr(self, log_snr):
        lam = as_times(log_snr)
        integral = torch.log1p(torch.exp(-lam))
        d = self.beta_max - self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * integral)) / d


class VE(ScalarSchedule):
    """Variance exploding: ``alpha = 1``, ``sigma = sigma_min (sigma_max / sigma_min)^t``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def _alpha_sigma(self, t):
        return torch.ones_like(t), self.sigma_min * torch.exp(self._log_ratio * t)

    def _derivatives(self, t):
        return torch.zeros_like(t), self._log_ratio * self.sigma_min * torch.exp(
            self._log_ratio * t
        )

    def t_from_log_snr(self, log_snr):
        sigma = torch.exp(-0.5 * as_times(log_snr))
        return torch.log(sigma / self.sigma_min) / self._log_ratio


class EDM(ScalarSchedule):
    """EDM (Karras et al.): ``alpha = 1``, ``sigma(t) = (s_min^(1/rho) + t (s_max^(1/rho) -
    s_min^(1/rho)))^rho``, so a grid uniform in t is EDM's rho-spaced discretisation."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self._lo, self._hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)

    def _alpha_sigma(self, t):
        return torch.ones_like(t), (self._lo + t * (self._hi - self._lo)) ** self.rho

    def _derivatives(self, t):
        base = self._lo + t * (self._hi - self._lo)
        return torch.zeros_like(t), self.rho * base ** (self.rho - 1) * (self._hi - self._lo)

    def t_from_log_snr(self, log_snr):
        sigma = torch.exp(-0.5 * as_times(log_snr))
        return (sigma ** (1 / self.rho) - self._lo) / (self._hi - self._lo)


class RectifiedFlow(ScalarSchedule):
    """Rectified flow / flow matching with a Gaussian source: ``alpha = 1 - t``, ``sigma = t``."""

    def __init__(self, t_min: float = 1e-4):
        super().__init__()
        self.t_min = float(t_min)

    def _alpha_sigma(self, t):
        t = t.clamp(0, 1)  # as VPCosine: keep alpha >= 0 when a solver probes past t = 1
        return 1 - t, t

    def _derivatives(self, t):
        return -torch.ones_like(t), torch.ones_like(t)

    def t_from_log_snr(self, log_snr):
        return torch.sigmoid(-0.5 * as_times(log_snr))
