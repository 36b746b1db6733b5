"""Dataset plumbing shared by every source: train/holdout splits and batch fetching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.utils.data import Dataset, Subset


class Split(Subset):
    """A ``torch.utils.data.Subset`` that keeps the wrapped dataset's ``shape`` ``(C, H, W)``."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dataset.shape


def holdout_split(
    dataset: Dataset, holdout: int, split: Literal["train", "holdout"] = "train"
) -> Dataset:
    """The first ``len - holdout`` items (``"train"``) or the last ``holdout`` (``"holdout"``).

    With ``holdout == 0`` the training split is the dataset itself.
    """
    if split not in ("train", "holdout"):
        raise ValueError(f"split must be 'train' or 'holdout', got {split!r}")
    n = len(dataset)
    if holdout == 0:
        if split == "holdout":
            raise ValueError("split='holdout' needs data.holdout > 0")
        return dataset
    if not 0 < holdout < n:
        raise ValueError(
            f"data.holdout must be in [0, {n}) for this dataset of {n} images, got {holdout}"
        )
    return Split(dataset, range(n - holdout) if split == "train" else range(n - holdout, n))


def load_batch(dataset: Dataset, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Items ``indices`` stacked to ``(B, C, H, W)``, vectorised where the dataset supports it.

    Uses ``__getitems__`` (as ``DataLoader`` does) when present, e.g. for ``ShapesDataset`` and
    ``NpzDataset`` or a ``Split`` of them; otherwise one ``__getitem__`` per index.
    """
    indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(indices) if getitems else [dataset[i] for i in indices]
    # (image, label) items of a labelled dataset: the images
    return torch.stack([it[0] if isinstance(it, tuple) else it for it in items])
