"""Exponential moving average of a model's weights, with EDM's half-life in images."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn


def ema_beta(
    batch_size: int, images_seen: int, halflife_images: float, warmup_ratio: float | None
) -> float:
    """Decay per step: ``0.5 ** (batch_size / halflife)``, the half-life counted in images and
    (EDM's ramp-up) capped at ``warmup_ratio * images_seen``, so early averages forget the
    random initialisation quickly. ``images_seen`` counts images before this step."""
    halflife = halflife_images
    if warmup_ratio is not None:
        halflife = min(halflife, warmup_ratio * images_seen)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


class EMA:
    """A frozen copy of ``model`` whose floating-point parameters track the model's.

    Buffers (basis matrices, prior statistics, running statistics) are shared with the model,
    not copied: they are not trained, so the average of a buffer is the buffer, and sharing
    costs nothing per step. :meth:`state_dict` therefore holds the buffers too, and
    :meth:`load_state_dict` restores them. Build the EMA after moving the model to its device.

    Each parameter counts its own updates (:attr:`updates`): a parameter left out of a step
    (a multi-scale model's network of another scale) keeps its average, and its decay follows
    the images *it* has been trained on, so every network gets its own EMA.
    """

    def __init__(self, model: nn.Module):
        memo = {id(b): b for b in model.buffers()}  # deepcopy returns memo hits as they are
        self.module = copy.deepcopy(model, memo).eval().requires_grad_(False)
        pairs = [
            (e, p)
            for e, p in zip(self.module.parameters(), model.parameters(), strict=True)
            if p.is_floating_point()
        ]
        self._ema = [e for e, _ in pairs]
        self.sources = [p for _, p in pairs]
        self.updates = [0] * len(pairs)

    @torch.no_grad()
    def update(
        self, beta: float | Callable[[int], float], active: Sequence[bool] | None = None
    ) -> None:
        """``ema <- beta * ema + (1 - beta) * model`` for the parameters flagged in ``active``
        (all by default). ``beta`` is a number, or a function of how many updates a parameter
        has had before this one; one fused kernel per distinct count."""
        if active is not None and len(active) != len(self._ema):
            raise ValueError(f"active needs {len(self._ema)} flags, got {len(active)}")
        groups: dict[int, tuple[list, list]] = {}
        for i, (e, p) in enumerate(zip(self._ema, self.sources, strict=True)):
            if active is None or active[i]:
                es, ps = groups.setdefault(self.updates[i], ([], []))
                es.append(e)
                ps.append(p)
                self.updates[i] += 1
        for count, (es, ps) in groups.items():
            b = beta(count) if callable(beta) else beta
            torch._foreach_lerp_(es, ps, 1.0 - b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
