"""Multi-scale models (MSDiff, MSF): at each time, a network runs only on the bands still active.

On a Haar basis whose bands are noised in windows (:class:`~nudiff.schedules.BandWindows`),
detail band ``k`` (``k = 0`` the finest) is pure noise, independent of everything else, once
``t`` passes the end ``E_k`` of its window. With ends that do not decrease from fine to coarse,
the distinct ends cut ``[0, 1]`` into *stages*; in stage ``s`` the ``d_s`` finest bands are
finished and only the top-left ``(H / 2^d_s, W / 2^d_s)`` block of components carries
information: the Haar transform of the image ``2^d_s avg_pool(x, 2^d_s)``. Each stage is the
sub-process on that block (:func:`coarse_process`), with its own denoiser; the finished bands
get the exact prior answer.

MSDiff's multi-speed schedule has one stage per Haar level (``d_s = s``); MSF's has two, the
residual at full resolution (``d_0 = 0``) and the base at ``H / 2^L`` (``d_1 = L``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch import nn

from nudiff.bases import Haar
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import BandWindows, as_times


def check_multiscale_process(process: Process) -> None:
    """Raise unless ``process`` is a Haar basis with band windows (multispeed, msf) over its
    levels whose ends do not decrease from the finest band to the coarsest."""
    basis, schedule = process.basis, process.schedule
    if not isinstance(basis, Haar) or not isinstance(schedule, BandWindows):
        raise ValueError(
            "a multi-scale model needs the haar basis with a multispeed or msf schedule, got "
            f"{type(basis).__name__} with {type(schedule).__name__}"
        )
    if basis.levels < 1:
        raise ValueError("a multi-scale model needs a Haar basis with at least 1 level")
    if not torch.equal(schedule.band.cpu(), basis.level_map() - 1):
        raise ValueError("the schedule's bands must be the Haar levels (finest band first)")
    ends = schedule.ends
    if any(b < a for a, b in zip(ends, ends[1:], strict=False)):
        raise ValueError(
            f"a multi-scale model needs band windows that end from the finest band to the "
            f"coarsest, got ends {ends}"
        )


def stages(process: Process) -> tuple[list[float], list[int]]:
    """``(ends, dropped)``, finest stage first: stage ``s`` runs until ``ends[s]`` (the distinct
    band ends) with its ``dropped[s]`` finest Haar levels finished (pure noise)."""
    check_multiscale_process(process)
    band_ends = process.schedule.ends
    ends = sorted(set(band_ends))
    dropped = [0] + [sum(e <= lo for e in band_ends) for lo in ends[:-1]]
    return ends, dropped


def coarse_process(process: Process, dropped: int) -> Process:
    """The process of the bands left after dropping the ``dropped`` finest detail levels.

    Basis: :meth:`Haar.coarse_basis`, acting on the image ``2^dropped avg_pool(x, 2^dropped)``
    ``(C, H / 2^dropped, W / 2^dropped)``; schedule and prior: the full ones restricted to the
    top-left block, so its components follow exactly the law of that block of ``process``.
    """
    check_multiscale_process(process)
    basis, schedule = process.basis, process.schedule
    sub = basis.coarse_basis(dropped)
    _, h, w = sub.shape
    sched = schedule.coarse(dropped, h, w)
    prior = Prior(
        sub.shape,
        process.prior.mean[..., :h, :w].cpu(),
        process.prior.scale[..., :h, :w].cpu(),
    )
    device = process.prior.mean.device
    return Process(sub, sched, prior).to(device)


def pool_image(x: torch.Tensor, dropped: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``2^dropped avg_pool(x, 2^dropped)``: the image of the components
    left after dropping ``dropped`` levels (the factor keeps the Haar transform orthonormal)."""
    if dropped == 0:
        return x
    f = 2**dropped
    return torch.nn.functional.avg_pool2d(x, f) * f


class MultiScaleDenoiser(nn.Module):
    """Denoiser of a Haar / band-window process made of one denoiser per stage ("scale").

    Args:
        process: the full process (see :func:`check_multiscale_process`).
        scales: one denoiser per stage of :func:`stages`, finest first (``L + 1`` for
            multispeed, 2 for msf); ``scales[s]`` maps the components of
            :func:`coarse_process` ``(process, dropped[s])`` ``(B, C, H / 2^d, W / 2^d)`` and a
            time to its x0 estimate (a :class:`~nudiff.models.denoiser.Denoiser` whose
            ``process`` is that sub-process, or an exact oracle). They may share a backbone.

    ``model(u, t)`` is a full-resolution denoiser: any sampler works with it, the bands
    finished at scale ``s(t)`` get the exact prior answer ``alpha u / (alpha^2 + sigma^2)``, and
    the network of scale ``s(t)`` sees only its block. ``model(u_s, t, scale=s)`` evaluates one
    scale on its own components (training; the coarse-to-fine sampler in
    :mod:`nudiff.samplers.multiscale` calls the scales directly).
    """

    #: each training step trains one scale: the trainer wraps DDP with find_unused_parameters
    unused_parameters = True

    def __init__(self, process: Process, scales: Sequence[nn.Module]):
        super().__init__()
        ends, dropped = stages(process)
        if len(scales) != len(ends):
            raise ValueError(
                f"need {len(ends)} scale denoisers, one per stage (finest first), got {len(scales)}"
            )
        for s, d in enumerate(scales):
            want = process.basis.coarse_shape(dropped[s])
            got = getattr(getattr(d, "process", None), "shape", None)
            if got != want:
                raise ValueError(f"scale {s}'s denoiser must act on shape {want}, got {got}")
        self.process = process
        self.scales = nn.ModuleList(scales)
        #: the stages' ends ``E_s`` (finest first) and their dropped Haar levels ``d_s``
        self.finishing_times, self.dropped = ends, dropped

    @property
    def num_classes(self) -> int | None:
        return getattr(self.scales[0], "num_classes", None)

    def scale_at(self, t: float) -> int:
        """The scale whose bands are active at time ``t``: the number of stages that end at or
        before ``t``."""
        return bisect.bisect_right(self.finishing_times[:-1], float(t))

    def interval(self, scale: int) -> tuple[float, float]:
        """``[T_{s-1}, T_s]``: the times at which scale ``s`` is used (``T_{-1} = t_min``)."""
        lo = self.finishing_times[scale - 1] if scale > 0 else self.process.t_min
        return lo, self.finishing_times[scale]

    def forward(self, u: torch.Tensor, t, scale: int | None = None, **kw) -> torch.Tensor:
        """``u``: ``(B, C, H, W)`` full components, or with ``scale`` the components of that
        scale; ``t``: ``(B,)`` or ``(1,)`` -> x0 estimate shaped like ``u``; ``kw`` go to the
        scales' denoisers (e.g. ``labels``).

        Without ``scale`` the scale of each time is read on the host (one device sync per call;
        rows at different scales are grouped, one network call per scale present)."""
        if scale is not None:  # kw: labels
            return self.scales[scale](u, t, **kw)
        return self.assemble(u, t, self.scales, **kw)

    def per_brick(self, u: torch.Tensor, t, scale: int, **kw) -> torch.Tensor:
        """The per-brick estimates ``(K, B, C, h, w)`` of scale ``scale``'s LEGO denoiser on
        its components (LEGO's joint loss; see :meth:`Denoiser.per_brick
        <nudiff.models.denoiser.Denoiser.per_brick>`)."""
        return self.scales[scale].per_brick(u, t, **kw)

    def assemble(self, u: torch.Tensor, t, scales: Sequence, **kw) -> torch.Tensor:
        """The full-resolution estimate with the block of scale ``s`` from ``scales[s]`` (the
        scales' denoisers, or wrappers of them: a guided multi-scale model guides each scale on
        its own block) and the prior answer for the bands finished there."""
        t = as_times(t, u)
        alpha, sigma = self.process.coefficients(t, u)
        out = alpha * u / (alpha**2 + sigma**2)  # the prior answer, right for finer bands
        if t.numel() == 1:
            self._fill(out, u, t, scales, self.scale_at(t.item()), slice(None), kw)
            return out
        if t.shape[0] != u.shape[0]:
            raise ValueError(f"t must have shape (1,) or (B,) = ({u.shape[0]},), got {t.shape}")
        per_row = torch.tensor([self.scale_at(x) for x in t.tolist()])
        for s in per_row.unique().tolist():
            rows = (per_row == s).nonzero().flatten().to(u.device)
            self._fill(out, u, t, scales, s, rows, kw)
        return out

    def _fill(self, out, u, t, scales: Sequence, s: int, rows, kw: dict) -> None:
        _, h, w = self.process.basis.coarse_shape(self.dropped[s])
        tr = t if t.numel() == 1 else t[rows]
        # per-row keywords (class labels) follow their rows
        kw = {k: v[rows] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in kw.items()}
        out[rows, :, :h, :w] = scales[s](u[rows, :, :h, :w], tr, **kw)
