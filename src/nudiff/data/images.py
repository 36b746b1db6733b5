"""Image I/O: float batches <-> uint8 arrays, sample grids, PNG files."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from nudiff.data.transforms import float_to_uint8, pil_to_float


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` float in ``[-1, 1]`` -> ``(B, H, W, C)`` uint8 numpy array (clipped).

    Exact inverse of ``uint8 / 127.5 - 1``: every uint8 value survives the round trip.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    return float_to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(
    x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile ``(B, C, H, W)`` into one ``(C, H', W')`` image with ``nrow`` images per row.

    ``nrow`` defaults to ``ceil(sqrt(B H / W))``, at most ``B``: a near-square grid (of
    ``ceil(sqrt(B))`` columns for square images; wide images get fewer columns, tall ones
    more); empty cells and the ``padding`` pixels between and around images are filled with
    ``pad_value`` (white by default).
    """
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    nrow = nrow or min(b, math.ceil(math.sqrt(b * h / w)))
    rows = math.ceil(b / nrow)
    x = x.detach().float().cpu()
    x = torch.cat([x, x.new_full((rows * nrow - b, c, h, w), pad_value)])
    # pad right/bottom of each cell, tile by reshaping, then add the top/left outer border
    x = F.pad(x, (0, padding, 0, padding), value=pad_value)
    x = x.view(rows, nrow, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    x = x.reshape(c, rows * (h + padding), nrow * (w + padding))
    return F.pad(x, (padding, 0, padding, 0), value=pad_value)


def save_image_grid(
    x: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    padding: int = 2,
    min_size: int = 0,
) -> Path:
    """Save ``(B, C, H, W)`` in ``[-1, 1]`` as a PNG grid; returns the path.

    Images smaller than ``min_size`` are enlarged by an integer factor (nearest neighbour, so
    pixels stay visible as pixels) towards it. Creates parent folders and writes a temporary
    file renamed with ``os.replace``, so readers (and a crash mid-write) never see a
    half-written PNG.
    """
    factor = max(1, min_size // max(x.shape[-2:]))
    if factor > 1:
        x = x.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = to_uint8(make_grid(x, nrow, padding)[None])[0]
    img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_image(path: str | os.PathLike) -> Image.Image:
    """Fully decode an image file with Pillow.

    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` naming the file
    when it cannot be decoded (decoding everything here means truncated files fail too).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        msg = " ".join(str(e).split())  # one line, whatever Pillow says
        raise ValueError(f"cannot read image {path}: {msg}") from None


def load_image(
    path: str | os.PathLike, channels: int = 3, resolution: int | None = None
) -> torch.Tensor:
    """Read an image file as float32 ``(C, H, W)`` in ``[-1, 1]``.

    ``resolution`` centre-crops and resizes to a square; ``None`` keeps the file's size.
    """
    return pil_to_float(open_image(path), channels, resolution)


#: the file types read_images takes from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_images(path: str | Path) -> torch.Tensor:
    """Float images ``(N, C, H, W)`` in ``[-1, 1]``, with their own channels (grey 1, colour 3),
    from an ``.npz`` (``x_train`` or its image array), a folder of image files (sorted by name)
    or one image file."""
    from nudiff.data.transforms import uint8_to_float

    path = Path(path)
    if path.suffix == ".npz":
        from nudiff.eval.features import load_images_npz

        images, _ = load_images_npz(path)
        x = torch.from_numpy(images)
        x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
        return uint8_to_float(x)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"image input not found: {path}")
    opened = [open_image(f) for f in files]
    images = [pil_to_float(im, 1 if im.mode in ("1", "L", "LA", "I") else 3) for im in opened]
    if len({tuple(im.shape) for im in images}) > 1:
        raise ValueError(f"the images in {path} have different sizes")
    return torch.stack(images)
