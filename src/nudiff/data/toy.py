"""The 1-D toy distributions of the Beta-diffusion paper, as datasets of ``(1, 1, 1)`` images.

Values ``v`` live in ``(0, 1)``; items are ``2 v - 1`` in ``[-1, 1]`` like every nudiff image, so
a Beta process with ``scale``, ``shift`` sees ``x0 = shift + scale v``.

* ``toy1``: five equally likely atoms at 1/7, 2/7, ..., 5/7 (the paper's Toy1).
* ``toy2``: range-bounded continuous parts mixed with point masses: equal weights on
  Unif[0.1, 0.2], Unif[0.3, 0.4], Unif[0.5, 0.6] and atoms at 0.725 and 0.875 (in the spirit of
  the paper's Toy2, whose exact components were not checked against it). The atoms sit at bin
  centres of the 100-bin histogram that scores the toys: an atom on a bin edge would split its
  samples between two bins on rounding alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

TOYS = ("toy1", "toy2")
_TOY2_UNIFORMS = ((0.1, 0.2), (0.3, 0.4), (0.5, 0.6))
_TOY2_ATOMS = (0.725, 0.875)


def toy_values(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws ``v`` in ``(0, 1)`` of toy ``name`` (float64), a function of ``seed``."""
    rng = np.random.default_rng((seed, TOYS.index(name) if name in TOYS else -1))
    if name == "toy1":
        return rng.integers(1, 6, n) / 7.0
    if name == "toy2":
        part = rng.integers(0, len(_TOY2_UNIFORMS) + len(_TOY2_ATOMS), n)
        u = rng.random(n)
        lo = np.array([a for a, _ in _TOY2_UNIFORMS] + list(_TOY2_ATOMS))
        width = np.array([b - a for a, b in _TOY2_UNIFORMS] + [0.0] * len(_TOY2_ATOMS))
        return lo[part] + width[part] * u
    raise ValueError(f"toy must be one of {TOYS}, got {name!r}")


class ToyDataset(Dataset):
    """``size`` draws of toy ``name`` as float32 ``(1, 1, 1)`` tensors ``2 v - 1``; the whole
    set is a function of ``(name, seed)``."""

    def __init__(self, name: str = "toy1", size: int = 100_000, seed: int = 0):
        self.name, self.size, self.seed = name, int(size), int(seed)
        self.shape = (1, 1, 1)
        v = toy_values(name, self.size, seed)
        self._x = torch.from_numpy(2 * v - 1).float().reshape(-1, 1, 1, 1)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} toy values")
        return self._x[i]

    def __getitems__(self, idx: list[int]) -> list[torch.Tensor]:
        return list(self._x[idx])
