"""The one noise level that stands for a per-component state: the mean log-SNR over components.

Per-component schedules have no single noise level; methods written for one (SiD's noise
levels, EDM's log-normal training times) use the mean log-SNR instead, which for a scalar
schedule is the schedule's own log-SNR.
"""

from __future__ import annotations

import torch
from torch import nn

from nudiff.process import Process

#: log-SNRs are clipped to +-LAMBDA_CLIP before averaging: beyond it a component is data (or
#: noise) to float precision
LAMBDA_CLIP = 20.0


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``fp(xp)`` at ``x`` (``xp`` increasing; clamped)."""
    x = x.to(xp.dtype).clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1 = xp[i - 1], xp[i]
    w = (x - x0) / (x1 - x0)
    return fp[i - 1] + w * (fp[i] - fp[i - 1])


class ReferenceTime(nn.Module):
    """The mean log-SNR over components, ``lambda_ref(t)`` (each clipped to +-20), tabulated on
    ``points`` times in ``[t_min, 1]`` and inverted: the one noise level that stands for a
    per-component state (for a scalar schedule it is the schedule's log-SNR)."""

    def __init__(self, process: Process, points: int = 4097):
        super().__init__()
        t = torch.linspace(process.t_min, 1.0, points, dtype=torch.float64)
        lam = torch.cat(
            [
                process.schedule.log_snr(c)
                .double()
                .clamp(-LAMBDA_CLIP, LAMBDA_CLIP)
                .flatten(1)
                .mean(1)
                .cpu()
                for c in t.split(256)
            ]
        )
        # non-increasing per component, so in the mean; a tiny slope makes the inverse a function
        lam = torch.cummin(lam, 0).values - 1e-9 * (t - t[0])
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("neg_lam", -lam, persistent=False)  # increasing, for searchsorted

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda_ref`` at times ``t`` (any shape), float64."""
        return -_interp(t, self.t, self.neg_lam)

    def time(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The time ``(any shape)`` at which ``lambda_ref`` equals ``log_snr`` (clamped to the
        schedule's range), float64."""
        return _interp(-torch.as_tensor(log_snr, dtype=torch.float64), self.neg_lam, self.t)
