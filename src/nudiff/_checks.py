"""Early, one-line validation of user input."""

from __future__ import annotations

import torch


def check_images(x: torch.Tensor, shape: tuple[int, int, int], name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, C, H, W)`` tensor matching ``shape``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have rank 4 (B, C, H, W) with (C, H, W) = {tuple(shape)}, "
            f"got shape {tuple(x.shape)}"
        )
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have (C, H, W) = {tuple(shape)}, got {tuple(x.shape[1:])}")


def check_shape(shape) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` data shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive entries, got {shape}")
    return shape
