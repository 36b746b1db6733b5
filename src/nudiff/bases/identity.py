"""The pixel basis."""

from __future__ import annotations

import torch

from nudiff.bases.base import Basis, channel_label


class Identity(Basis):
    """Components are the pixels themselves; labels are their row, column and channel."""

    default_label = "col"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def labels(self) -> dict[str, torch.Tensor]:
        c, h, w = self.shape
        row = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(c, h, w).clone()
        col = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(c, h, w).clone()
        return {
            "row": row,
            "col": col,
            "channel": channel_label(self.shape),
            "frequency": torch.zeros(self.shape),
        }

    def groups(self) -> tuple[torch.Tensor, list[str]]:
        return torch.zeros(self.shape, dtype=torch.long), ["pixels"]
