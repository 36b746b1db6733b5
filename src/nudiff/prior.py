"""The prior scale: per-component mean and standard deviation that whiten the components."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from nudiff._checks import check_shape


@torch.no_grad()
def moments(fn, batches: Iterable[torch.Tensor], what: str = "moments"):
    """Per-element mean and standard deviation of ``fn(x)`` over image batches, accumulated in
    float64 with Chan's parallel update. Returns two float64 tensors shaped like one item."""
    n, mean, m2 = 0, None, None
    for x in batches:
        z = fn(x.double())
        b, bm = z.shape[0], z.mean(0)
        bm2 = ((z - bm) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = b, bm, bm2
            continue
        delta, tot = bm - mean, n + b
        mean = mean + delta * b / tot
        m2 = m2 + bm2 + delta**2 * n * b / tot
        n = tot
    if mean is None or n < 2:
        raise ValueError(f"batches: {what} needs at least 2 samples, got {n}")
    return mean, (m2 / (n - 1)).sqrt()


class Prior(nn.Module):
    """Whitening ``u = (z - mean) / scale`` of basis components ``z`` ``(B, C, H, W)``.

    The diffusion acts on ``u``, so a white prior (mean 0, scale 1) is standard diffusion and a
    data-matched prior (GUD's ``S = sqrt(Sigma)``) makes every component unit-variance before
    noising. Mean and scale are buffers, saved with the model.
    """

    def __init__(self, shape, mean: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        super().__init__()
        self.shape = check_shape(shape)
        mean = torch.zeros(self.shape) if mean is None else torch.as_tensor(mean).float()
        scale = torch.ones(self.shape) if scale is None else torch.as_tensor(scale).float()
        if mean.shape != self.shape or scale.shape != self.shape:
            raise ValueError(f"prior mean and scale must have shape {self.shape}")
        if not (scale > 0).all():
            raise ValueError("prior scale must be > 0 for every component")
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    @classmethod
    def white(cls, shape) -> Prior:
        return cls(shape)

    @classmethod
    def fit(cls, basis: nn.Module, batches: Iterable[torch.Tensor], min_scale: float = 1e-3):
        """Data-matched diagonal prior from image batches ``(B, C, H, W)`` mapped by ``basis``;
        scales are floored at ``min_scale`` times the largest so no component is divided by ~0.
        """
        mean, std = moments(basis, batches, "the prior")
        return cls(basis.shape, mean.float(), std.clamp_min(min_scale * std.max()).float())

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean.to(z.dtype)) / self.scale.to(z.dtype)

    def unwhiten(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.scale.to(u.dtype) + self.mean.to(u.dtype)
