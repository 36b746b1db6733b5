"""Time grids for sampling, from t = 1 (prior) down to the schedule's ``t_min``."""

from __future__ import annotations

import torch

from nudiff.process import Process


def uniform_grid(process: Process, steps: int, t_max: float = 1.0) -> torch.Tensor:
    """``steps + 1`` times uniform in t from ``t_max`` to ``t_min``, float64."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_max, process.t_min, steps + 1, dtype=torch.float64)
