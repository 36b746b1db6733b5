"""Data sources, image I/O and ``build_dataset``, the factory behind ``DataConfig``.

Every dataset yields float32 ``(C, H, W)`` images in ``[-1, 1]`` and has a ``shape`` attribute.
Horizontal flips are not a dataset wrapper: the trainer calls ``random_hflip(batch, generator)``
on each training batch, so the flips are a pure function of the generator's seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from torch.utils.data import Dataset

from nudiff.data.config import DataConfig
from nudiff.data.folder import ImageFolderDataset
from nudiff.data.hub import HuggingFaceDataset, TorchvisionDataset
from nudiff.data.images import load_image, make_grid, save_image_grid, to_uint8
from nudiff.data.labels import Labelled, dataset_labels
from nudiff.data.loading import Split, holdout_split, load_batch
from nudiff.data.npz import NpzDataset
from nudiff.data.panorama import PanoramaDataset
from nudiff.data.shapes import ShapesDataset
from nudiff.data.toy import ToyDataset
from nudiff.data.transforms import random_hflip


def _fields(cfg: DataConfig) -> Dataset:
    # imported here so the other sources work while fields.py is absent or broken
    from nudiff.data.fields import GaussianFieldDataset

    return GaussianFieldDataset(
        size=cfg.size,
        resolution=cfg.resolution,
        channels=cfg.channels,
        exponent=cfg.exponent,
        seed=cfg.seed,
    )


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "shapes": lambda c: ShapesDataset(
        c.size, c.resolution, c.channels, c.seed, c.min_shapes, c.max_shapes
    ),
    "fields": _fields,
    "panorama": lambda c: PanoramaDataset(
        c.size, c.resolution, c.channels, c.seed, c.layers, c.exponent, c.width
    ),
    "toy": lambda c: ToyDataset(c.key or "toy1", c.size, c.seed),
    "npz": lambda c: NpzDataset(c.path, c.key, c.resolution, c.resize, c.channels),
    "folder": lambda c: ImageFolderDataset(c.path, c.resolution, c.channels),
    # a fresh machine gets the files; without internet torchvision's own error explains
    "torchvision": lambda c: TorchvisionDataset(
        c.key, c.path, c.resolution, c.channels, download=True
    ),
    "huggingface": lambda c: HuggingFaceDataset(c.path, c.resolution, c.channels, image_key=c.key),
}


def build_dataset(
    cfg: DataConfig | Mapping[str, Any],
    split: Literal["train", "holdout"] = "train",
    num_classes: int | None = None,
) -> Dataset:
    """The ``split`` of the dataset ``cfg`` describes: all but the last ``cfg.holdout`` images
    (``"train"``; only its first ``cfg.limit`` with a limit) or those last ones (``"holdout"``).
    Items are ``(C, R, R)`` in ``[-1, 1]``, or ``(image, label)`` pairs with ``num_classes``
    (:class:`~nudiff.data.labels.Labelled`).
    """
    cfg = cfg if isinstance(cfg, DataConfig) else DataConfig.model_validate(cfg)
    if cfg.width not in (None, cfg.resolution) and cfg.name != "panorama":
        raise ValueError(
            f"data.width is for data.name=panorama only (got data.name={cfg.name!r}); "
            "other sources are square"
        )
    dataset = holdout_split(DATASETS[cfg.name](cfg), cfg.holdout, split)
    if split == "train" and cfg.limit is not None:
        if cfg.limit > len(dataset):
            raise ValueError(
                f"data.limit={cfg.limit} exceeds the {len(dataset)} images of the training split"
            )
        dataset = Split(dataset, range(cfg.limit))
    return dataset if num_classes is None else Labelled(dataset, num_classes)


__all__ = [
    "DATASETS",
    "DataConfig",
    "HuggingFaceDataset",
    "ImageFolderDataset",
    "Labelled",
    "NpzDataset",
    "PanoramaDataset",
    "ShapesDataset",
    "Split",
    "ToyDataset",
    "TorchvisionDataset",
    "build_dataset",
    "dataset_labels",
    "holdout_split",
    "load_batch",
    "load_image",
    "make_grid",
    "random_hflip",
    "save_image_grid",
    "to_uint8",
]
