"""The NDM training objective: the bound of :mod:`nudiff.ndm.bound`, one draw per image."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.eval.elbo import importance_times, time_density
from nudiff.ndm.bound import (
    BOUNDS,
    continuous_integrand,
    discrete_grid,
    discrete_term,
    end_terms,
)
from nudiff.process import Process


class NDMLoss(nn.Module):
    """``-ELBO`` per image ``(B,)`` in nats per dimension of the whitened components (the
    whitening's constant log-Jacobian left out), for the denoiser and the transform of an
    :class:`~nudiff.ndm.NDM` trained jointly: reconstruction + prior + one draw of the
    diffusion term.

    ``bound``: ``continuous`` draws ``t`` stratified over the batch in the importance density
    of :func:`nudiff.eval.elbo.time_density` (uniform in log-SNR for a scalar schedule, weight
    ``1 / density``: unbiased, as VDM); ``discrete`` draws one of ``steps`` steps per image
    (stratified) and weighs its KL by ``steps``. ``dequantize``: train on 8-bit images
    dequantised as the likelihood evaluation sees them, ``x = (k + U) / 128 - 1`` with ``k``
    the pixel's level (``U ~ U[0, 1)`` drawn with the batch); otherwise on the levels
    themselves, where a likelihood-trained model can grow arbitrarily sharp. Follows the
    trainer's protocol (:meth:`draw`, then :meth:`forward` on a slice)."""

    def __init__(
        self,
        process: Process,
        bound: str = "continuous",
        steps: int = 1000,
        dequantize: bool = False,
    ):
        super().__init__()
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.process, self.bound, self.steps = process, bound, int(steps)
        self.dequantize = bool(dequantize)
        self._density = time_density(process) if bound == "continuous" else None

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict[str, torch.Tensor]:
        device = generator.device
        r = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        v = ((torch.randperm(n, generator=generator, device=device).double() + r) / n).cpu()
        if self.bound == "continuous":
            t, weight = importance_times(self._density, v)
            out = {"t": t.float().to(device), "weight": weight.float().to(device)}
        else:
            k = (v * self.steps).floor().long().clamp(0, self.steps - 1) + 1
            out = {"k": k.to(device)}
        out["eps"] = torch.randn((n, *self.process.shape), generator=generator, device=device)
        if self.dequantize:
            shape = (n, *self.process.shape)
            out["dequant"] = torch.rand(shape, generator=generator, device=device)
        return out

    def forward(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """``model``: the :class:`~nudiff.ndm.NDM` (or a DDP wrapper around it)."""
        ndm = getattr(model, "module", model)
        transform, process = ndm.transform, self.process
        if self.dequantize:  # the 8-bit level of each pixel, spread uniformly over its cell
            level = ((x0.clamp(-1, 1) + 1) * 127.5).round()
            x0 = (level + noise["dequant"].to(x0)) / 128 - 1
        u0 = process.encode(x0)
        eps = noise["eps"].to(u0)
        rec, prior = end_terms(transform, process, u0)
        if self.bound == "continuous":
            t = noise["t"].to(u0)
            diff = continuous_integrand(transform, model, process, u0, t, eps)
            diff = diff * noise["weight"].to(u0).view(-1, 1, 1, 1)
        else:
            t, s = discrete_grid(process, self.steps, noise["k"].to(u0.device), u0)
            diff = discrete_term(transform, model, process, u0, t, s, eps) * self.steps
        return (rec + prior + diff).flatten(1).mean(1)
