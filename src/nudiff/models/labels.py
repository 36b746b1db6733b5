"""Class-label embedding shared by the backbones, with the null label of classifier-free
guidance."""

from __future__ import annotations

import torch
from torch import nn


class LabelEmbedding(nn.Module):
    """Labels ``(B,)`` int64 in ``0 .. K`` -> ``(B, dim)``, added to a backbone's noise embedding.

    Label ``K`` (``num_classes``) is the *null* label: trained on the ``label_dropout`` share of
    the batch with its label hidden, it makes the same network the unconditional model that
    classifier-free guidance needs. ``labels=None`` is the null label for the whole batch.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)  # small: labels start as a nudge

    def forward(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, device=self.table.weight.device)
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        return self.table(labels.long())


def label_term(
    embedding: LabelEmbedding | None, labels: torch.Tensor | None, batch: int
) -> torch.Tensor | float:
    """The embedding's term for ``labels`` (0 for a backbone without classes, which refuses
    labels)."""
    if embedding is None:
        if labels is not None:
            raise ValueError("this backbone has no class labels (model.num_classes is not set)")
        return 0.0
    return embedding(labels, batch)
