"""The Beta-diffusion denoiser: logit-space input standardisation around an image backbone."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.beta.process import BetaProcess

INPUT_CLAMP = 50.0  # standardised logits beyond this carry no more information


class BetaDenoiser(nn.Module):
    """``D(logit z_t, logit alpha_t) -> x0_hat`` in ``(shift, shift + scale)``, float64.

    The backbone sees ``(logit z_t - m) / s`` with ``m``, ``s`` the closed-form moments of
    ``logit z_t`` at ``alpha_t`` (:meth:`BetaProcess.logit_moments`), and the noise feature
    ``-logit alpha_t / 8`` ``(B, 1)``; its output ``F`` is read as ``x0_hat = shift + scale
    sigmoid(F)``, so every prediction is a valid Beta mean. ``data_mean`` ``(C, H, W)``: the
    per-pixel mean of ``x0`` over training data (measured when the model is built, saved in the
    state dict), from which the sampler starts.
    """

    def __init__(
        self, process: BetaProcess, backbone: nn.Module, data_mean: torch.Tensor | None = None
    ):
        super().__init__()
        self.process, self.backbone = process, backbone
        shape = process.shape
        if data_mean is None:  # a placeholder for load_state_dict
            data_mean = torch.full(shape, process.shift + process.scale / 2)
        data_mean = torch.as_tensor(data_mean, dtype=torch.float32)
        if data_mean.shape != shape:
            raise ValueError(f"data_mean must have shape {shape}, got {tuple(data_mean.shape)}")
        self.register_buffer("data_mean", data_mean)

    @staticmethod
    def noise_features() -> int:
        return 1

    def forward(self, logit_z: torch.Tensor, logit_alpha: torch.Tensor) -> torch.Tensor:
        """``logit_z`` ``(B, C, H, W)``, ``logit_alpha`` ``(B,)`` or ``(1,)`` -> ``x0_hat``
        ``(B, C, H, W)`` float64."""
        p = self.process
        logit_alpha = logit_alpha.double().reshape(-1)
        mean, std = p.logit_moments(torch.sigmoid(logit_alpha))
        x = (logit_z.double() - mean[:, None, None, None]) / std[:, None, None, None]
        x = x.clamp(-INPUT_CLAMP, INPUT_CLAMP).float()
        cond = (-logit_alpha / 8).float()[:, None].expand(len(x), 1)
        out = self.backbone(x, cond).double()
        return p.shift + p.scale * torch.sigmoid(out)
