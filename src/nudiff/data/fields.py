"""Gaussian random fields with a power-law spectrum, as a dataset (exact oracle available)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from nudiff.oracle import field_model


class GaussianFieldDataset(Dataset):
    """``size`` fields ``(C, H, W)`` with spectrum ``P(k) ~ |k|^-exponent``, scaled to pixel
    standard deviation ``std`` on average (0.5 keeps most values inside [-1, 1] like images).

    Item ``i`` depends only on ``(seed, i)``. ``model`` is the exact :class:`DiagonalGaussian`
    (in the DCT basis, times ``std``) for oracle comparisons.
    """

    def __init__(
        self,
        size: int = 50_000,
        resolution: int = 32,
        channels: int = 1,
        exponent: float = 2.0,
        seed: int = 0,
        std: float = 0.5,
    ):
        self.size, self.seed, self.std = int(size), int(seed), float(std)
        self.shape = (int(channels), int(resolution), int(resolution))
        self.model = field_model(self.shape, exponent)
        self._sd = self.model.var.sqrt().float() * self.std

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} fields")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
        z = torch.randn(self.shape, generator=g) * self._sd
        return self.model.basis.inverse(z[None])[0]
