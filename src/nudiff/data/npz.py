"""Images stored as one uint8 array in a NumPy ``.npz`` file (e.g. the offline MNIST, CIFAR-10)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from nudiff.data.transforms import pad_to, resize_uint8, to_channels, uint8_to_float

#: the environment variable naming a folder where relative data paths are also looked for
DATA_ENV = "NUDIFF_DATA"


def data_file(path: str | os.PathLike) -> Path:
    """``path`` as given when that file exists (relative: to the working directory), else the
    same relative path under ``$NUDIFF_DATA`` when that file exists; else a one-line
    ``FileNotFoundError`` that names both places."""
    path = Path(path)
    if path.is_file():
        return path
    root = os.environ.get(DATA_ENV)
    if root and not path.is_absolute() and (Path(root) / path).is_file():
        return Path(root) / path
    where = f"working directory {os.getcwd()}"
    where += f", {DATA_ENV}={root}" if root else f"; {DATA_ENV} is not set"
    raise FileNotFoundError(
        f"npz file not found: {path} ({where}); make it as in the data guide "
        "(docs/guides/data.md) and give it with --set data.path=FILE or put it in $NUDIFF_DATA"
    )


def npz_arrays(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every array in an ``.npz``, read from headers without loading."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                out[name.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"not a readable .npz file: {path} ({e})") from None
    return out


def _describe(arrays: dict) -> str:
    return ", ".join(f"{k} {tuple(s)} {d}" for k, (s, d) in arrays.items()) or "none"


def _is_images(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3)))


class NpzDataset(Dataset):
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` (C in {1, 3}) from an ``.npz`` file.

    Args:
        path: the ``.npz`` file; relative paths are relative to the current working directory.
        key: the array to read; ``None`` picks ``x_train`` if present, else the only uint8
            array of rank 3 or 4.
        resolution: square output size; ``None`` keeps the stored size.
        resize: ``"pad"`` centres each image on a canvas of background ``-1`` (cropping the
            centre if it is larger), so pixels stay exact (MNIST 28 -> 32); ``"resize"``
            centre-crops to a square and resizes with Pillow bicubic (antialiased).
        channels: 1 or 3 converts grey <-> RGB (luma for RGB -> grey); ``None`` keeps them.
        indices: a slice or index array selecting a subset, e.g. ``slice(-5000, None)``.

    The whole array is held once as a uint8 tensor; items are converted to float on access.
    ``__getitem__`` returns float32 ``(C, R, R)`` in ``[-1, 1]``; ``batch`` returns
    ``(B, C, R, R)`` (DataLoader uses it through ``__getitems__``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key: str | None = None,
        resolution: int | None = None,
        resize: Literal["pad", "resize"] = "pad",
        channels: int | None = None,
        indices: slice | Sequence[int] | np.ndarray | None = None,
    ):
        path = data_file(path)
        if resize not in ("pad", "resize"):
            raise ValueError(f"resize must be 'pad' or 'resize', got {resize!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {channels}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        arrays = npz_arrays(path)
        if key is None:
            key = _default_key(arrays, path)
        if key not in arrays:
            raise ValueError(f"{path} has no array {key!r}; arrays: {_describe(arrays)}")
        if not _is_images(*arrays[key]):
            shape, dtype = arrays[key]
            raise ValueError(
                f"{path}[{key!r}] must be uint8 images (N, H, W) or (N, H, W, C) with C in "
                f"(1, 3), got {dtype} {tuple(shape)}"
            )
        with np.load(path) as data:
            x = data[key]
            # the labels of x_train, when the file has them (class-conditional models)
            y = data["y_train"] if key == "x_train" and "y_train" in arrays else None
        if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
            raise ValueError(
                f"{path}['y_train'] must be integer labels of shape ({len(x)},), got {y.dtype} "
                f"{y.shape}"
            )
        if indices is not None:
            x = x[indices]
            y = None if y is None else y[indices]
        self.targets = None if y is None else torch.from_numpy(y.astype(np.int64))
        x = torch.from_numpy(np.ascontiguousarray(x))
        self.images = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
        self.path, self.key, self.resize = path, key, resize
        self.resolution = resolution
        self.channels = channels or self.images.shape[1]
        h, w = self.images.shape[2:]
        self.shape = (self.channels, resolution or h, resolution or w)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batch([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.batch(indices))

    def labels(self, indices: Sequence[int]) -> np.ndarray:
        """Class labels ``(B,)`` from ``y_train`` (a ValueError if the file has none)."""
        if self.targets is None:
            raise ValueError(f"{self.path} has no y_train labels for {self.key!r}")
        return self.targets[torch.as_tensor(indices, dtype=torch.long)].numpy()

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` as one float32 ``(B, C, R, R)`` tensor in ``[-1, 1]``."""
        x = self.images[torch.as_tensor(indices, dtype=torch.long)]
        res = self.resolution
        if res is not None and self.resize == "resize" and x.shape[2:] != (res, res):
            x = torch.stack([resize_uint8(xi, res) for xi in x])  # Pillow works per image
        x = to_channels(uint8_to_float(x), self.channels)
        if res is not None and x.shape[2:] != (res, res):
            x = pad_to(x, res)  # background -1, after the float conversion
        return x


def _default_key(arrays: dict, path: Path) -> str:
    if "x_train" in arrays:
        return "x_train"
    candidates = [k for k, (shape, dtype) in arrays.items() if _is_images(shape, dtype)]
    if len(candidates) != 1:
        raise ValueError(
            f"{path}: cannot pick the image array ({len(candidates)} uint8 arrays of shape "
            f"(N, H, W) or (N, H, W, C)); pass key=... Arrays: {_describe(arrays)}"
        )
    return candidates[0]
