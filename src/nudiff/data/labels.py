"""Class labels beside the images, for class-conditional models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from nudiff.data.loading import load_batch


def dataset_labels(dataset: Dataset, indices: Sequence[int]) -> torch.Tensor:
    """Class labels ``(B,)`` (int64) of items ``indices``; a ``Subset`` (e.g. the training split)
    maps its indices to the dataset it wraps. The source must have ``labels(indices)``."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset, [dataset.indices[i] for i in indices])
    labels = getattr(dataset, "labels", None)
    if not callable(labels):
        raise ValueError(
            f"{type(dataset).__name__} has no class labels (model.num_classes needs a source "
            "with labels: shapes, or an npz with y_train)"
        )
    return torch.as_tensor(np.asarray(labels(list(indices))), dtype=torch.long)


class Labelled(Dataset):
    """Items ``(image (C, H, W), label ())`` of ``dataset`` with its class labels, checked to lie
    in ``0 .. num_classes - 1`` once, up front."""

    def __init__(self, dataset: Dataset, num_classes: int):
        self.dataset, self.num_classes = dataset, int(num_classes)
        self.targets = dataset_labels(dataset, range(len(dataset)))
        if len(self.targets) and not 0 <= int(self.targets.min()) <= int(self.targets.max()) < (
            self.num_classes
        ):
            raise ValueError(
                f"model.num_classes={self.num_classes}, but the data's labels span "
                f"{int(self.targets.min())}..{int(self.targets.max())}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dataset.shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[i], self.targets[i]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images = load_batch(self.dataset, indices)
        return list(zip(images, self.targets[list(indices)], strict=True))
