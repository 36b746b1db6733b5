"""A small MLP backbone for low-dimensional data (the 1-D toys: images of shape (1, 1, 1))."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.models.layers import check_inputs, fourier_features, noise_frequencies, zero_init


class MLP(nn.Module):
    """``(B, C, H, W) -> (B, C_out, H, W)`` for one fixed ``(C, H, W)``: the flattened input and a
    sin-cos embedding of each noise feature go through ``depth`` residual SiLU blocks of
    ``width`` units; the output layer starts at zero (like the UNet's)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        width: int = 128,
        depth: int = 3,
        noise_features: int = 1,
        out_channels: int | None = None,
        frequencies: int = 16,
    ):
        super().__init__()
        if width < 1 or depth < 1 or noise_features < 1 or frequencies < 1:
            raise ValueError("width, depth, noise_features and frequencies must be >= 1")
        c, h, w = shape
        self.shape, self.in_channels = (c, h, w), c
        self.out_channels = c if out_channels is None else out_channels
        self.noise_features = noise_features
        # c_noise spans a few units: periods from ~60 down to ~0.06, as in the UNet
        self.register_buffer("freqs", noise_frequencies(frequencies), persistent=False)
        self.inp = nn.Linear(c * h * w + 2 * frequencies * noise_features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = zero_init(nn.Linear(width, self.out_channels * h * w))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, {self.shape}), got {tuple(x.shape)}")
        cond = check_inputs(x, c_noise, self.in_channels, self.noise_features, 1)
        h = self.inp(torch.cat([x.flatten(1), fourier_features(cond, self.freqs)], 1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).reshape(len(x), self.out_channels, *self.shape[1:])
