"""The shared part of the built-in procedural image sets (shapes, panoramas): items drawn from
``(seed, index)`` alone and rendered a batch at a time."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nudiff.data.transforms import LUMA

_LUMA = np.array(LUMA)


class ProceduralImages(Dataset):
    """Base class: ``size`` items of ``channels`` (1 or 3) at ``resolution`` pixels; item ``i``
    depends only on ``(seed, i)`` (:meth:`_uniforms`). Subclasses implement ``batch(indices)``
    -> ``(B, C, H, W)``, with :meth:`_to_tensor` for the last step; ``__getitem__`` and
    ``__getitems__`` (DataLoader's batched access) go through it."""

    def __init__(self, size: int, resolution: int, channels: int, seed: int):
        for name, value, least in (("size", size, 1), ("resolution", resolution, 4)):
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.size, self.resolution, self.channels, self.seed = size, resolution, channels, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batch([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.batch(indices))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def _uniforms(self, i: int, count: int) -> np.ndarray:
        """All the randomness of item ``i``: ``count`` uniforms from ``(seed, i)``."""
        i = operator.index(i)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            name = type(self).__name__
            raise IndexError(f"index {i} out of range for {name} of size {self.size}")
        return np.random.default_rng((self.seed, i)).random(count)

    def _to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """Rendered RGB in ``[0, 1]`` ``(B, 3, H, W)`` -> float32 in ``[-1, 1]`` with the data
        set's channels (grey: the luma)."""
        if self.channels == 1:
            rgb = np.einsum("c,bchw->bhw", _LUMA, rgb)[:, None]
        return torch.from_numpy(rgb * 2.0 - 1.0).float()
