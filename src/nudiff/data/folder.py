"""A folder of image files (searched recursively), e.g. a custom data set."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from nudiff.data.images import load_image, open_image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolderDataset(Dataset):
    """Every PNG/JPEG/BMP/WebP file under ``root`` (recursively, sorted by path).

    Each image is centre-cropped to a square and resized to ``resolution`` (Pillow bicubic,
    antialiased). Files are decoded lazily, one per item; a file that cannot be decoded raises a
    ``ValueError`` naming it. Call ``check()`` once to find every unreadable file up front.

    ``__getitem__`` returns float32 ``(channels, resolution, resolution)`` in ``[-1, 1]``.
    Relative ``root`` paths are relative to the current working directory.
    """

    def __init__(self, root: str | os.PathLike, resolution: int, channels: int = 3):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(
                f"image folder not found: {root} (working directory {os.getcwd()})"
            )
        if not root.is_dir():
            raise ValueError(f"not a folder: {root}")
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise ValueError(f"no image files ({', '.join(EXTENSIONS)}) under {root}")
        self.root, self.resolution, self.channels = root, resolution, channels
        self.shape = (channels, resolution, resolution)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.files[i], self.channels, self.resolution)

    def check(self) -> None:
        """Decode every file once; raise one ``ValueError`` listing all unreadable files."""
        bad = []
        for p in self.files:
            try:
                open_image(p)
            except (ValueError, FileNotFoundError):
                bad.append(str(p))
        if bad:
            shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise ValueError(
                f"{len(bad)} of {len(self.files)} images under {self.root} are unreadable: {shown}"
            )
