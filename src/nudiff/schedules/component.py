"""Per-component schedules: the shared base, and the variance-preserving ones defined by each
component's log-SNR.

Every VP schedule here has ``lambda_i(t)`` piecewise linear in t, which covers MSDiff's
multi-speed bands, GUD's soft-conditioning and its sequential (clipped) variants.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from nudiff.schedules.base import Schedule, as_times, vp_from_log_snr


class PerComponent(Schedule):
    """A schedule of its own per component, ``(B, C, H, W)`` coefficients for ``t`` ``(B,)``.

    Its per-component parameters are buffers shaped like the components; components whose
    parameters are all equal follow the same schedule (:meth:`classes`), and :meth:`restrict`
    keeps one component per class, so per-component work (time grids, likelihood time
    densities) costs the number of distinct schedules, not ``C H W``.
    """

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    @staticmethod
    def _bt(t, ref):
        return t.to(ref.dtype).view(-1, 1, 1, 1)

    def _component_buffers(self) -> dict[str, torch.Tensor]:
        """The buffers that hold per-component parameters (shaped like the components)."""
        return {k: b for k, b in self._buffers.items() if b is not None and b.shape == self.shape}

    def classes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Components with identical schedules: ``(representatives (K,), inverse (D,))`` with
        flat indices, so that component ``i`` follows ``representatives[inverse[i]]``."""
        params = torch.stack([b.double().flatten() for b in self._component_buffers().values()], 1)
        _, inverse = torch.unique(params, dim=0, return_inverse=True)
        d = inverse.numel()
        first = torch.full((int(inverse.max()) + 1,), d, dtype=torch.long, device=inverse.device)
        first.scatter_reduce_(0, inverse, torch.arange(d, device=inverse.device), "amin")
        return first, inverse

    def restrict(self, index: torch.Tensor) -> PerComponent:
        """The schedule of the flat components ``index`` ``(K,)`` alone, shaped ``(K, 1, 1)``:
        per-component quantities (e.g. for time grids) then cost ``K``, not ``C H W``."""
        index = torch.as_tensor(index).flatten()
        out = copy.copy(self)  # shares everything but the buffer table, replaced below
        out._buffers = dict(self._buffers)
        for k, b in self._component_buffers().items():
            out._buffers[k] = b.flatten()[index.to(b.device)].view(-1, 1, 1)
        out.shape = (index.numel(), 1, 1)
        return out


class PerComponentVP(PerComponent):
    """VP schedule with log-SNR ``lambda_i(t)`` per component; subclasses give ``_lam(t)`` and
    ``_dlam(t)`` of shape ``(B, C, H, W)`` for ``t`` ``(B,)``."""

    def log_snr(self, t):
        return self._lam(as_times(t))

    def _both(self, t):
        t = as_times(t)
        return vp_from_log_snr(self._lam(t), self._dlam(t))

    def alpha_sigma(self, t):
        a, s, _, _ = self._both(t)
        return a, s

    def derivatives(self, t):
        _, _, da, ds = self._both(t)
        return da, ds

    def _lam(self, t):
        raise NotImplementedError

    def _dlam(self, t):
        raise NotImplementedError


class WindowedLogSNR(PerComponentVP):
    """Component ``i`` is noised during its window ``[start_i, end_i]``: log-SNR ``log_snr_max``
    before it, falling linearly to ``log_snr_min`` at ``end_i``, and frozen there after it.

    Frozen after its window (zero drift and diffusion), a component's law no longer changes, so
    drawing it from the prior when its window is crossed during sampling is exact; it counts as
    inactive (``inactive_log_snr = log_snr_min``).
    """

    def __init__(self, start, end, log_snr_max: float = 10.0, log_snr_min: float = -10.0):
        start, end = torch.as_tensor(start).double(), torch.as_tensor(end).double()
        if start.dim() != 3 or start.shape != end.shape:
            raise ValueError(
                f"start and end must both be (C, H, W), got {tuple(start.shape)} and "
                f"{tuple(end.shape)}"
            )
        if not (0 <= start).all() or not (end <= 1).all() or not (start < end).all():
            raise ValueError("windows must satisfy 0 <= start < end <= 1 for every component")
        if not log_snr_min < log_snr_max:
            raise ValueError(
                f"log_snr_min must be < log_snr_max, got {log_snr_min} and {log_snr_max}"
            )
        super().__init__(start.shape)
        self.log_snr_max, self.log_snr_min = float(log_snr_max), float(log_snr_min)
        self.inactive_log_snr = self.log_snr_min
        self.register_buffer("start", start, persistent=False)
        self.register_buffer("end", end, persistent=False)

    def _frac(self, t):
        t = self._bt(t, self.start)
        return (t - self.start) / (self.end - self.start)

    def _lam(self, t):
        frac = self._frac(t).clamp(0, 1)
        lam = self.log_snr_max + (self.log_snr_min - self.log_snr_max) * frac
        return lam.to(t.dtype)

    def _dlam(self, t):
        frac = self._frac(t)
        slope = (self.log_snr_min - self.log_snr_max) / (self.end - self.start)
        inside = (frac > 0) & (frac < 1)
        return torch.where(inside, slope, 0.0).to(t.dtype)

    def breakpoints(self) -> list[float]:
        return _interior(torch.cat([self.start.flatten(), self.end.flatten()]))

    def windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start, end)`` per component, ``(C, H, W)`` each."""
        return self.start, self.end


class BandWindows(WindowedLogSNR):
    """One window per band of a band-labelled basis: band ``k`` (``k = 0`` the finest detail
    band, the last the coarsest approximation) is noised during ``[starts[k], ends[k]]``.

    The schedules of the multi-scale model (:mod:`nudiff.models.multiscale`): once ``t``
    passes ``ends[k]`` band ``k`` is pure noise, so with ends that do not decrease from fine to
    coarse a network need only see the bands that are not yet finished.

    Args:
        band: long tensor ``(C, H, W)``, each component's band index ``0..n-1`` (the Haar
            basis's ``level_map() - 1``).
        starts, ends: ``n`` times each, ``0 <= starts[k] < ends[k] <= 1``.
    """

    def __init__(
        self,
        band: torch.Tensor,
        starts: Sequence[float],
        ends: Sequence[float],
        log_snr_max: float = 10.0,
        log_snr_min: float = -10.0,
    ):
        band = torch.as_tensor(band).long()
        n = int(band.max()) + 1
        starts = torch.as_tensor(list(starts), dtype=torch.float64)
        ends = torch.as_tensor(list(ends), dtype=torch.float64)
        if starts.numel() != n or ends.numel() != n:
            raise ValueError(
                f"need one start and one end per band ({n}), got {starts.numel()} and "
                f"{ends.numel()}"
            )
        super().__init__(starts[band], ends[band], log_snr_max, log_snr_min)
        self.starts, self.ends = starts.tolist(), ends.tolist()
        self.register_buffer("band", band, persistent=False)

    def coarse(self, dropped: int, h: int, w: int) -> BandWindows:
        """The schedule of the top-left ``(h, w)`` block once the ``dropped`` finest bands are
        left out (a multi-scale model's stage)."""
        band = self.band[..., :h, :w].cpu() - dropped
        return BandWindows(
            band, self.starts[dropped:], self.ends[dropped:], self.log_snr_max, self.log_snr_min
        )


class MultiSpeed(BandWindows):
    """MSDiff's multi-speed schedule: every band is noised from t = 0, band ``k`` (finest
    first) until its finishing time ``T_k``; defaults ``T_k = (k + 1) / n`` for ``n`` bands, so
    the coarsest band finishes at ``T = 1``.

    Args:
        band: as :class:`BandWindows`.
        finishing_times: ``n`` increasing times in ``(0, 1]``, or None for equal spacing.
    """

    def __init__(
        self,
        band: torch.Tensor,
        finishing_times: Sequence[float] | None = None,
        log_snr_max: float = 10.0,
        log_snr_min: float = -10.0,
    ):
        band = torch.as_tensor(band).long()
        n = int(band.max()) + 1
        if finishing_times is None:
            finishing_times = [(k + 1) / n for k in range(n)]
        times = torch.as_tensor(list(finishing_times), dtype=torch.float64)
        if times.numel() != n:
            raise ValueError(
                f"finishing_times must have one entry per band ({n}), got {len(times)}"
            )
        if not ((times > 0) & (times <= 1)).all():
            raise ValueError(f"finishing_times must lie in (0, 1], got {times.tolist()}")
        if not (times[1:] > times[:-1]).all():
            raise ValueError(f"finishing_times must be increasing, got {times.tolist()}")
        super().__init__(band, [0.0] * n, times.tolist(), log_snr_max, log_snr_min)
        self.finishing_times = times.tolist()

    def coarse(self, dropped: int, h: int, w: int) -> MultiSpeed:
        band = self.band[..., :h, :w].cpu() - dropped
        times = self.finishing_times[dropped:]
        return MultiSpeed(band, times, self.log_snr_max, self.log_snr_min)


class MSF(BandWindows):
    """MSF's two-stage factorisation as a schedule: base first, then the residual.

    On a Haar basis with ``L`` levels the approximation band is the image average-pooled by
    ``2^L`` (the *base*) and the detail bands together are ``x - up(base)`` with nearest
    up-sampling (the *residual*). The residual is noised during ``[0, split]`` while the base
    stays clean; the base is noised during ``[split, 1]`` while the residual is pure noise.
    Generation therefore makes the base alone first (``t`` from 1 to ``split``), then the
    residual with the base clean and frozen.

    Args:
        band: as :class:`BandWindows`; the last band is the base, all others the residual.
        split: the time ``tau`` in ``(0, 1)`` at which the stages meet.
    """

    def __init__(
        self,
        band: torch.Tensor,
        split: float = 0.5,
        log_snr_max: float = 10.0,
        log_snr_min: float = -10.0,
    ):
        split = float(split)
        if not 0 < split < 1:
            raise ValueError(f"split must be in (0, 1), got {split}")
        band = torch.as_tensor(band).long()
        n = int(band.max()) + 1
        if n < 2:
            raise ValueError("MSF needs a base band and at least one residual band")
        starts, ends = [0.0] * (n - 1) + [split], [split] * (n - 1) + [1.0]
        super().__init__(band, starts, ends, log_snr_max, log_snr_min)
        self.split = split


def _interior(times: torch.Tensor) -> list[float]:
    """The distinct values of ``times`` strictly inside ``(0, 1)``, increasing."""
    times = torch.unique(times.double())
    return times[(times > 0) & (times < 1)].tolist()


def _normalise(labels: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels).double()
    lo, hi = labels.min(), labels.max()
    return (labels - lo) / (hi - lo) if hi > lo else torch.zeros_like(labels)


class SoftConditioning(PerComponentVP):
    """GUD's soft-conditioning: ``gamma_i(t) = -lambda_i(t)`` linear in t per component.

    With labels normalised to ``l in [0, 1]`` and ``a = 1 / softness``::

        gamma_i(t) = g_denoise + a (l_i - 1) + t (g_noise - g_denoise + a) + offset_i

    Components with a larger label are noised first (generated last). ``softness = inf`` gives
    every component the same schedule (standard diffusion); ``softness -> 0`` shrinks the
    windows in which ``gamma_i`` crosses ``[g_denoise, g_noise]`` to disjoint points ordered by
    label (autoregression). ``offset_i`` is GUD's ``log Sigma_i`` term for a white prior (with a
    data-matched prior the components are already whitened and it is zero). ``clip=True`` keeps
    ``gamma`` inside ``[g_denoise, g_noise]``: the sequential variant, with frozen, inactive
    components outside their window.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        softness: float = 1.0,
        g_denoise: float = -10.0,
        g_noise: float = 10.0,
        offset: torch.Tensor | None = None,
        clip: bool = False,
    ):
        softness = float(softness)
        if not softness > 0:
            raise ValueError(
                f"softness must be > 0 (the limit 0 is the sequential schedule), got {softness}"
            )
        if not g_denoise < g_noise:
            raise ValueError(f"g_denoise must be < g_noise, got {g_denoise} and {g_noise}")
        labels = torch.as_tensor(labels)
        if labels.dim() != 3:
            raise ValueError(f"labels must be (C, H, W), got {tuple(labels.shape)}")
        super().__init__(labels.shape)
        a = 0.0 if math.isinf(softness) else 1.0 / softness
        l = _normalise(labels)
        off = torch.zeros_like(l) if offset is None else torch.as_tensor(offset).double()
        self.softness, self.g_denoise, self.g_noise, self.clip = softness, g_denoise, g_noise, clip
        self.labels, self.offset = labels, offset
        self.register_buffer("gamma0", g_denoise + a * (l - 1) + off, persistent=False)
        self.register_buffer(
            "slope", (g_noise - g_denoise + a) * torch.ones_like(l), persistent=False
        )
        if clip:
            self.inactive_log_snr = -g_noise

    def with_softness(self, softness: float) -> SoftConditioning:
        """The same schedule (labels, offsets, range, clipping) at another ``softness``."""
        out = SoftConditioning(
            self.labels, softness, self.g_denoise, self.g_noise, self.offset, self.clip
        )
        return out.to(self.gamma0.device)

    def _gamma(self, t):
        return self.gamma0 + self._bt(t, self.gamma0) * self.slope

    def _lam(self, t):
        g = self._gamma(t)
        if self.clip:
            g = g.clamp(self.g_denoise, self.g_noise)
        return (-g).to(t.dtype)

    def _dlam(self, t):
        d = -self.slope.expand(t.shape[0], *self.shape)
        if self.clip:
            g = self._gamma(t)
            d = torch.where((g > self.g_denoise) & (g < self.g_noise), d, 0.0)
        return d.to(t.dtype)

    def breakpoints(self) -> list[float]:
        if not self.clip:
            return []
        return _interior(torch.cat([w.flatten() for w in self.active_window()]))

    def active_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Times ``(C, H, W)`` at which ``gamma_i`` enters and leaves ``[g_denoise, g_noise]``."""
        enter = (self.g_denoise - self.gamma0) / self.slope
        leave = (self.g_noise - self.gamma0) / self.slope
        return enter, leave


class Sequential(WindowedLogSNR):
    """Hard sequential generation in the order of a label (e.g. column by column).

    The ``m`` distinct label values get equal windows; the largest label is noised first, so
    generation runs from the smallest label up. ``overlap in [0, 1)`` is the fraction by which
    consecutive windows overlap: 0 gives disjoint windows (autoregression over label groups).
    """

    def __init__(
        self,
        labels: torch.Tensor,
        overlap: float = 0.0,
        log_snr_max: float = 10.0,
        log_snr_min: float = -10.0,
    ):
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        labels = torch.as_tensor(labels).double()
        if labels.dim() != 3:
            raise ValueError(f"labels must be (C, H, W), got {tuple(labels.shape)}")
        values = torch.unique(labels)
        m = values.numel()
        order = torch.searchsorted(values, labels)  # 0 = smallest label
        window = (m - 1 - order).double()  # the largest label is noised first
        length = 1.0 / (1 + (m - 1) * (1 - overlap))
        start = window * length * (1 - overlap)
        super().__init__(start, (start + length).clamp(max=1.0), log_snr_max, log_snr_min)
        self.overlap = float(overlap)
