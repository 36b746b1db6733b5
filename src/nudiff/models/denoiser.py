"""Preconditioning: the wrapper that keeps the parametrisation out of the backbone."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.parametrization import to_x0
from nudiff.process import Process
from nudiff.schedules import as_times


class Denoiser(nn.Module):
    """``D(u_t, t) -> E[u_0 | u_t]`` in whitened components, built around an image backbone.

    Per component (EDM's preconditioning written for any ``alpha``, ``sigma``), with
    ``n^2 = sigma^2 + alpha^2 sigma_data^2`` the variance of ``u_t``:

    * input: ``c_in u_t`` with ``c_in = 1 / n``, mapped to image space by the basis inverse, so
      the backbone sees a unit-variance image whatever the per-component schedule;
    * output: the backbone's image ``F`` is mapped back to components and read as

      - ``edm``: ``x0 = c_skip u_t + c_out F``, ``c_skip = alpha sigma_data^2 / n^2``,
        ``c_out = sigma sigma_data / n`` (unit-variance target at every noise level);
      - ``eps`` / ``v``: ``F`` is the eps / v prediction, converted exactly;
      - ``x0``: ``x0 = sigma_data F``.

    The backbone is conditioned on ``t`` and the mean log-SNR of every basis group (so a
    per-component schedule's state is visible at a glance), ``1 + n_groups`` features.

    Components that are fully noised at ``t`` (``process.inactive``) get the exact answer for a
    unit-variance prior, ``alpha u_t / (alpha^2 + sigma^2)``, i.e. the prior score, not the
    network's: no network needs to see them.
    """

    def __init__(
        self,
        process: Process,
        backbone: nn.Module,
        prediction: str = "edm",
        sigma_data: float = 0.5,
    ):
        super().__init__()
        if prediction not in ("edm", "eps", "x0", "v"):
            raise ValueError(f"prediction must be one of edm, eps, x0, v; got {prediction!r}")
        self.process, self.backbone = process, backbone
        self.prediction, self.sigma_data = prediction, float(sigma_data)
        index, names = process.basis.groups()
        onehot = torch.nn.functional.one_hot(index.flatten(), len(names)).float()
        # (D, G) averaging matrix from components to groups
        self.register_buffer("group_avg", onehot / onehot.sum(0), persistent=False)

    @staticmethod
    def noise_features(process: Process) -> int:
        return 1 + len(process.basis.groups()[1])

    def condition(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Noise conditioning ``(B, 1 + n_groups)``: ``t`` and group-mean log-SNR / 8."""
        lam = self.process.log_snr(t, like).clamp(-20, 20)
        lam = lam.expand(t.shape[0], *self.process.shape).flatten(1)
        groups = lam @ self.group_avg.to(lam.dtype)
        return torch.cat([t.view(-1, 1).to(lam.dtype), groups / 8], dim=1)

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        """``u``: ``(B, C, H, W)`` noisy whitened components; ``t``: ``(B,)`` -> x0 estimate."""
        t = as_times(t, u).expand(u.shape[0])
        alpha, sigma = self.process.coefficients(t, u)
        sd2 = self.sigma_data**2
        n2 = sigma**2 + alpha**2 * sd2
        image = self.process.basis.inverse(u * n2.rsqrt())
        out = self.process.basis(self.backbone(image, self.condition(t, u)).to(u.dtype))
        if self.prediction == "edm":
            x0 = (alpha * sd2 / n2) * u + (sigma * self.sigma_data * n2.rsqrt()) * out
        elif self.prediction == "x0":
            x0 = self.sigma_data * out
        else:
            x0 = to_x0(out, self.prediction, u, alpha, sigma)
        inactive = self.process.inactive(t, like=u)
        if inactive.any():
            x0 = torch.where(inactive, alpha * u / (alpha**2 + sigma**2), x0)
        return x0
