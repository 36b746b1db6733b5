"""Optional sources: torchvision datasets and Hugging Face ``datasets``.

Neither package is a dependency of nudiff: each class imports its package when constructed and
raises an ``ImportError`` saying what to install when it is missing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nudiff.data.transforms import pil_to_float


class TorchvisionDataset(Dataset):
    """Images of a ``torchvision.datasets`` class, e.g. ``TorchvisionDataset("CIFAR10", "data")``.

    ``kwargs`` go to the class (e.g. ``train=True``, ``split="train"``); labels are dropped.
    Images are centre-cropped and resized to ``resolution``; items are float32
    ``(channels, resolution, resolution)`` in ``[-1, 1]``.
    """

    def __init__(
        self,
        name: str,
        root: str,
        resolution: int = 32,
        channels: int = 3,
        download: bool = False,
        **kwargs,
    ):
        try:
            import torchvision.datasets
        except ImportError:
            raise ImportError(
                "TorchvisionDataset needs torchvision: pip install torchvision "
                "(or use the 'npz' or 'folder' data sources)"
            ) from None
        cls = getattr(torchvision.datasets, name, None)
        if cls is None:
            raise ValueError(f"torchvision.datasets has no dataset {name!r}")
        self.dataset = cls(root, download=download, **kwargs)
        self.resolution, self.channels = resolution, channels
        self.shape = (channels, resolution, resolution)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        img = item[0] if isinstance(item, tuple) else item
        return pil_to_float(img, self.channels, self.resolution)


class HuggingFaceDataset(Dataset):
    """The image column of a Hugging Face dataset, e.g. ``HuggingFaceDataset("cifar10")``.

    ``name`` is a Hub id or a local path for ``datasets.load_dataset``; ``image_key`` defaults to
    the first column with the ``datasets.Image`` feature. Items are float32
    ``(channels, resolution, resolution)`` in ``[-1, 1]``.
    """

    def __init__(
        self,
        name: str,
        resolution: int = 32,
        channels: int = 3,
        split: str = "train",
        image_key: str | None = None,
        **kwargs,
    ):
        try:
            import datasets
        except ImportError:
            raise ImportError(
                "HuggingFaceDataset needs the Hugging Face datasets package: pip install datasets "
                "(or use the 'npz' or 'folder' data sources)"
            ) from None
        self.dataset = datasets.load_dataset(name, split=split, **kwargs)
        if image_key is None:
            features = self.dataset.features
            image_key = next(
                (k for k, f in features.items() if isinstance(f, datasets.Image)), None
            )
            if image_key is None:
                raise ValueError(f"{name}: no image column among {list(features)}; pass image_key")
        self.image_key, self.resolution, self.channels = image_key, resolution, channels
        self.shape = (channels, resolution, resolution)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.dataset[i][self.image_key]
        if not isinstance(img, Image.Image):  # e.g. a column of arrays rather than images
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        return pil_to_float(img, self.channels, self.resolution)
