"""Beta diffusion's forward process (Zhou et al., 2023): multiplicative, on data in (0, 1).

Images ``x`` in ``[-1, 1]`` are mapped to ``x0 = Shift + Scale (x + 1) / 2`` inside ``(0, 1)``
(upstream uses Scale 0.39, Shift 0.60 for images: bright pixels never reach 1 and dark ones stay
away from 0, where Beta shapes vanish). With ``alpha_t`` falling from ~1 to ~0,

    z_t | x0 ~ Beta(eta alpha_t x0, eta (1 - alpha_t x0)),   E[z_t | x0] = alpha_t x0,

and for ``s < t`` the reverse conditional is a multiplicative update,

    z_s = z_t + (1 - z_t) p,   p ~ Beta(eta (alpha_s - alpha_t) x0, eta (1 - alpha_s x0)).

States are kept as logits (float64): ``logit z_t = log G_a - log G_b`` is finite even when
``z_t`` is ``1e-300`` away from 0 or 1. The schedule is the sigmoid one: ``logit alpha_t`` is
``logit_alpha_max + (logit_alpha_min - logit_alpha_max) t^power``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nudiff.beta.gamma import beta_noise_shape, logit_beta

LOGIT_CLAMP = 1e4  # |logit z| beyond this is 0 or 1 at any precision; keeps inf out
_NODES, _WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(48))


class BetaProcess:
    """The forward process on ``shape`` ``(C, H, W)`` data: scaling, schedule, draws, moments.

    Args:
        shape: the data's ``(C, H, W)``.
        eta: concentration; larger is less noise per unit of ``alpha``.
        scale, shift: ``x0 = shift + scale (x + 1) / 2``; ``0 < shift``, ``shift + scale < 1``.
        logit_alpha_max, logit_alpha_min: ``logit alpha`` at ``t = 0`` and ``t = 1``.
        power: ``t``'s exponent in the schedule.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        eta: float = 1e4,
        scale: float = 0.39,
        shift: float = 0.60,
        logit_alpha_max: float = 10.0,
        logit_alpha_min: float = -13.0,
        power: float = 1.0,
    ):
        if not (eta > 0 and scale > 0 and shift > 0 and shift + scale < 1):
            raise ValueError(
                f"need eta > 0, scale > 0, shift > 0 and shift + scale < 1; got eta={eta}, "
                f"scale={scale}, shift={shift}"
            )
        if not (logit_alpha_min < logit_alpha_max and power > 0):
            raise ValueError("need logit_alpha_min < logit_alpha_max and power > 0")
        self.shape = tuple(int(s) for s in shape)
        self.eta, self.scale, self.shift = float(eta), float(scale), float(shift)
        self.logit_alpha_max, self.logit_alpha_min = float(logit_alpha_max), float(logit_alpha_min)
        self.power = float(power)

    # ------------------------------------------------------------------------ data <-> (0, 1)
    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` -> ``x0`` in ``[shift, shift + scale]`` (float64)."""
        return ((x.double() + 1) / 2).clamp(0, 1) * self.scale + self.shift

    def from_unit(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` -> images in ``[-1, 1]`` (the inverse of :meth:`to_unit`)."""
        return (x0 - self.shift) / self.scale * 2 - 1

    # ------------------------------------------------------------------------------ schedule
    def logit_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``logit alpha_t`` for ``t`` in ``[0, 1]`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        span = self.logit_alpha_min - self.logit_alpha_max
        return self.logit_alpha_max + span * t.clamp(0, 1) ** self.power

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit_alpha(t))

    # ----------------------------------------------------------------------- distributions
    def marginal(self, x0: torch.Tensor, alpha: torch.Tensor):
        """Concentrations ``(a, b)`` of ``z_t | x0`` for ``alpha = alpha_t`` (broadcast)."""
        ax = alpha * x0
        return self.eta * ax, self.eta * (1 - ax)

    def reverse(self, x0: torch.Tensor, alpha_t: torch.Tensor, alpha_s: torch.Tensor):
        """Concentrations ``(a, b)`` of ``p`` in ``z_s = z_t + (1 - z_t) p`` given ``x0``
        (``alpha_s > alpha_t``)."""
        return self.eta * (alpha_s - alpha_t) * x0, self.eta * (1 - alpha_s * x0)

    def draw(self, x0: torch.Tensor, alpha: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """``logit z_t`` ``(B, C, H, W)`` for ``x0`` ``(B, C, H, W)`` from ``normals`` of shape
        :meth:`noise_shape` (float64, clamped to ``+-LOGIT_CLAMP``)."""
        return logit_beta(*self.marginal(x0, alpha), normals).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the normals of ``n`` Beta draws of the data's shape."""
        return (n, *beta_noise_shape(self.shape))

    @staticmethod
    def step(logit_z: torch.Tensor, logit_p: torch.Tensor) -> torch.Tensor:
        """``logit z_s`` for ``z_s = z_t + (1 - z_t) p``: the odds are ``e^x + e^y + e^(x+y)``."""
        terms = torch.stack([logit_z, logit_p, logit_z + logit_p])
        return torch.logsumexp(terms, 0).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)

    def logit_moments(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``logit z_t`` with ``x0`` uniform on ``[shift, shift + scale]``:
        what standardises the network's input (float64, ``alpha``'s shape).

        Given ``x0``, ``logit z_t`` has mean ``psi(a) - psi(b)`` and variance ``psi'(a) +
        psi'(b)``; the law of total variance adds the spread of the mean over ``x0``.
        Gauss-Legendre quadrature over ``x0`` (48 nodes; the integrands are smooth there).
        """
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        nodes = _NODES.to(alpha.device)
        x = self.shift + self.scale * (nodes + 1) / 2
        w = (_WEIGHTS / 2).to(alpha.device)
        a, b = self.marginal(x, alpha[..., None])
        mean_given = torch.digamma(a) - torch.digamma(b)
        var_given = torch.polygamma(1, a) + torch.polygamma(1, b)
        mean = (w * mean_given).sum(-1)
        var = (w * (var_given + (mean_given - mean[..., None]) ** 2)).sum(-1)
        return mean, var.sqrt()

    def __repr__(self) -> str:
        return (
            f"BetaProcess(shape={self.shape}, eta={self.eta:g}, scale={self.scale:g}, "
            f"shift={self.shift:g}, logit_alpha=[{self.logit_alpha_max:g} -> "
            f"{self.logit_alpha_min:g}], power={self.power:g}, alpha_min="
            f"{1 / (1 + math.exp(-self.logit_alpha_min)):.3g})"
        )
