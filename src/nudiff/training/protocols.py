"""What the trainer needs from the diffusion-specific code."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Loss(Protocol):
    """A training objective that separates drawing its randomness from evaluating it.

    The trainer calls :meth:`draw` once per step for the *global* batch with a generator whose
    state is the same on every rank, and each rank evaluates its rows; so a run on N processes
    equals a run on one with the same global batch, and resuming replays the same draws.
    """

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The randomness of ``n`` samples (e.g. ``t: (n,)``, ``eps: (n, C, H, W)``), every
        tensor with leading dimension ``n``, drawn from ``generator`` only and created on
        ``generator.device`` (the training device)."""
        ...

    def __call__(
        self, model: nn.Module, x0: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-sample loss ``(B,)`` for images ``x0: (B, C, H, W)`` and the matching rows of
        :meth:`draw`'s output."""
        ...


class Augment(Protocol):
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented ``(B, C, H, W)`` batch, random only through ``generator``."""
        ...


class SampleFn(Protocol):
    def __call__(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples ``(n, C, H, W)`` in ``[-1, 1]`` from ``model``."""
        ...
