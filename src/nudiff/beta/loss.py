"""Beta diffusion's training objectives: KLUB, and the swapped-argument ELBO for comparison."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.beta.kl import kl_beta
from nudiff.beta.process import BetaProcess

OBJECTIVES = ("klub", "elbo")


class BetaDiffusionLoss(nn.Module):
    """Per-sample ``w_cond KL_cond + w_marg KL_marg`` averaged over pixels (trainer's
    :class:`~nudiff.training.protocols.Loss`).

    With ``t`` uniform in ``[t_min, 1]``, ``s = s_ratio t``, ``z_t`` drawn from the forward
    marginal and ``x0_hat = D(z_t, t)``:

    * ``klub`` (Zhou et al.'s KL upper bound): ``KL_cond = KL(q(z_s | z_t, x0_hat) ||
      q(z_s | z_t, x0))`` (a KL between the two Beta laws of ``p``) and ``KL_marg =
      KL(q(z_t | x0_hat) || q(z_t | x0))``;
    * ``elbo``: the same two KLs with their arguments swapped (the negative ELBO's terms).

    Both vanish exactly when ``x0_hat = x0``. :meth:`draw` returns all randomness, ``t``
    ``(n,)`` and the normals of the Gamma draws, so resume and DDP replay it.
    """

    def __init__(
        self,
        process: BetaProcess,
        objective: str = "klub",
        w_cond: float = 0.99,
        w_marg: float = 0.01,
        s_ratio: float = 0.95,
        t_min: float = 1e-5,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not 0 < s_ratio < 1 or not 0 <= t_min < 1:
            raise ValueError(f"need 0 < s_ratio < 1 and 0 <= t_min < 1, got {s_ratio}, {t_min}")
        self.process, self.objective = process, objective
        self.w_cond, self.w_marg = float(w_cond), float(w_marg)
        self.s_ratio, self.t_min = float(s_ratio), float(t_min)

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict[str, torch.Tensor]:
        dev = generator.device
        u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64)
        normals = torch.randn(self.process.noise_shape(n), generator=generator, device=dev)
        return {"t": self.t_min + (1 - self.t_min) * u, "normals": normals}

    def terms(
        self, x0: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element ``(KL_cond, KL_marg)`` for unit-range ``x0``, ``x0_hat`` ``(B, C, H, W)``
        at times ``t`` ``(B,)`` (float64)."""
        p = self.process
        alpha_t = p.alpha(t)[:, None, None, None]
        alpha_s = p.alpha(self.s_ratio * t)[:, None, None, None]
        true_c, pred_c = p.reverse(x0, alpha_t, alpha_s), p.reverse(x0_hat, alpha_t, alpha_s)
        true_m, pred_m = p.marginal(x0, alpha_t), p.marginal(x0_hat, alpha_t)
        if self.objective == "elbo":
            return kl_beta(*true_c, *pred_c), kl_beta(*true_m, *pred_m)
        return kl_beta(*pred_c, *true_c), kl_beta(*pred_m, *true_m)

    def forward(
        self, model: nn.Module, x: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-sample loss ``(B,)`` for images ``x`` ``(B, C, H, W)`` in ``[-1, 1]``."""
        p, t = self.process, noise["t"].double()
        x0 = p.to_unit(x)
        logit_z = p.draw(x0, p.alpha(t)[:, None, None, None], noise["normals"])
        x0_hat = model(logit_z, p.logit_alpha(t))
        cond, marg = self.terms(x0, x0_hat, t)
        return (self.w_cond * cond + self.w_marg * marg).flatten(1).mean(1).float()
