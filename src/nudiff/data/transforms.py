"""Pixel conversions and geometric helpers shared by the datasets.

Conventions: images are ``(C, H, W)`` (or batches ``(B, C, H, W)``); uint8 images hold ``0..255``
and float images hold ``[-1, 1]``, with ``-1`` the black background value.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# ITU-R BT.601 luma, the weights Pillow also uses for RGB -> "L"
LUMA = (0.299, 0.587, 0.114)


def uint8_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``0..255`` -> float32 ``[-1, 1]``, any shape."""
    return x.to(torch.float32) / 127.5 - 1.0


def float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float ``[-1, 1]`` -> uint8 ``0..255``, any shape; clips, then rounds to nearest."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(..., C, H, W)`` between grey (C=1) and RGB (C=3); identity when C matches."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
    if c == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(dim=-3, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}; supported: 1 <-> 3")


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of ``x`` ``(B, C, H, W)`` left-right with probability 1/2.

    The coin flips come from ``generator`` alone (one ``torch.rand(B)`` draw), so a trainer that
    seeds the generator from (seed, step) gets exactly the same flips on every run and device.
    """
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(flip, x.flip(-1), x)


def pad_to(x: torch.Tensor, size: int, value: float = -1.0) -> torch.Tensor:
    """Centre ``(..., H, W)`` on a ``size x size`` canvas of ``value``, cropping sides too large.

    Used for e.g. MNIST 28 -> 32: the digit keeps its pixels exactly and the border is background.
    """
    h, w = x.shape[-2:]
    out = x.new_full((*x.shape[:-2], size, size), value)
    # offsets of the overlap in the source (s*) and the canvas (d*), centred on both
    sh, dh = max((h - size) // 2, 0), max((size - h) // 2, 0)
    sw, dw = max((w - size) // 2, 0), max((size - w) // 2, 0)
    nh, nw = min(h, size), min(w, size)
    out[..., dh : dh + nh, dw : dw + nw] = x[..., sh : sh + nh, sw : sw + nw]
    return out


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """Pillow image (mode "L" or "RGB") -> uint8 tensor ``(C, H, W)``."""
    a = torch.from_numpy(np.array(img, dtype=np.uint8))
    return a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1).contiguous()


def uint8_to_pil(x: torch.Tensor) -> Image.Image:
    """uint8 tensor ``(C, H, W)`` with C in {1, 3} -> Pillow image ("L" or "RGB")."""
    a = x.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square, then resize it to ``size x size``.

    Bicubic in Pillow widens its kernel by the scale factor when shrinking, so downsampling is
    antialiased; cropping first keeps the aspect ratio.
    """
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img if s == size else img.resize((size, size), Image.Resampling.BICUBIC)


def pil_to_float(img: Image.Image, channels: int, resolution: int | None = None) -> torch.Tensor:
    """Any Pillow image -> float32 ``(channels, R, R)`` in ``[-1, 1]``.

    Converts the mode to "L" or "RGB" (alpha is dropped), then centre-crops and resizes to
    ``resolution`` (``None`` keeps the original size).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    # palette transparency must go through RGBA or Pillow warns
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    img = img.convert("L" if channels == 1 else "RGB")
    if resolution is not None:
        img = center_crop_resize(img, resolution)
    return uint8_to_float(pil_to_uint8(img))


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop and resize a uint8 ``(C, H, W)`` image (C in {1, 3}) to ``(C, size, size)``."""
    return pil_to_uint8(center_crop_resize(uint8_to_pil(x), size))
