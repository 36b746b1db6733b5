"""The orthonormal basis in which the diffusion acts."""

from __future__ import annotations

import math

import torch
from torch import nn

from nudiff._checks import check_images, check_shape


class Basis(nn.Module):
    """An orthonormal linear map from images ``(B, C, H, W)`` to components of the same shape.

    Orthonormality (``inverse == transpose``) means no Jacobian term in likelihoods and that
    isotropic noise stays isotropic. Subclasses implement :meth:`_forward` and :meth:`_inverse`
    and describe their components through :meth:`labels` (per-component ordering labels that
    schedules use) and :meth:`groups` (bands for plots and benchmarks).
    """

    #: name of the label that orders components from coarse to fine by default
    default_label = "frequency"

    def __init__(self, shape):
        super().__init__()
        self.shape = check_shape(shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W)`` -> components ``(B, C, H, W)``."""
        check_images(x, self.shape, "x")
        return self._forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Components ``(B, C, H, W)`` -> image ``(B, C, H, W)``."""
        check_images(z, self.shape, "z")
        return self._inverse(z)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def labels(self) -> dict[str, torch.Tensor]:
        """Named per-component labels, each a float tensor ``(C, H, W)``.

        Every basis provides ``"frequency"`` (a spatial frequency in cycles per pixel, or a
        rank-based stand-in), ``"channel"``, and its own (e.g. ``"level"`` for Haar).
        """
        raise NotImplementedError

    def label(self, name: str | None = None) -> torch.Tensor:
        """One label ``(C, H, W)``, ``default_label`` when ``name`` is None."""
        labels = self.labels()
        name = name or self.default_label
        if name not in labels:
            raise ValueError(f"label must be one of {sorted(labels)}, got {name!r}")
        return labels[name]

    def groups(self) -> tuple[torch.Tensor, list[str]]:
        """Component groups: an index tensor ``(C, H, W)`` (long) and one name per group."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def channel_label(shape) -> torch.Tensor:
    c, h, w = shape
    return torch.arange(c, dtype=torch.float32).view(c, 1, 1).expand(c, h, w).clone()


def octave_groups(freq: torch.Tensor, names_prefix: str = "f") -> tuple[torch.Tensor, list[str]]:
    """Group components by octave of a frequency label ``(C, H, W)`` (0 gets its own group)."""
    f = freq.double()
    fmin = f[f > 0].min() if (f > 0).any() else torch.tensor(1.0, dtype=torch.float64)
    octave = torch.where(f > 0, torch.floor(torch.log2(f / fmin)).long() + 1, 0)
    present = torch.unique(octave)
    index = torch.searchsorted(present, octave.flatten()).view(freq.shape)
    names = []
    for o in present.tolist():
        if o == 0:
            names.append(f"{names_prefix}=0")
        else:
            lo = float(fmin) * 2 ** (o - 1)
            names.append(f"{names_prefix}~[{lo:.3g},{2 * lo:.3g})")
    return index, names
