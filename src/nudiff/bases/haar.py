"""Orthonormal multi-level 2-D Haar wavelets in the Mallat (pyramid) layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nudiff._checks import check_images
from nudiff.bases.base import Basis, channel_label


def haar_step(x: torch.Tensor) -> torch.Tensor:
    """One orthonormal Haar level: ``(..., 2h, 2w)`` -> ``[[LL, LH], [HL, HH]]`` ``(..., 2h, 2w)``.

    ``LL`` is ``2 * avg_pool2d(x, 2)``: the factor 2 keeps the transform orthonormal.
    """
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) / 2
    lh = (a - b + c - d) / 2
    hl = (a + b - c - d) / 2
    hh = (a - b - c + d) / 2
    return torch.cat([torch.cat([ll, lh], -1), torch.cat([hl, hh], -1)], -2)


def haar_step_inverse(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_step`."""
    h, w = z.shape[-2] // 2, z.shape[-1] // 2
    ll, lh = z[..., :h, :w], z[..., :h, w:]
    hl, hh = z[..., h:, :w], z[..., h:, w:]
    a = (ll + lh + hl + hh) / 2
    b = (ll - lh + hl - hh) / 2
    c = (ll + lh - hl - hh) / 2
    d = (ll - lh - hl + hh) / 2
    top = torch.stack([a, b], -1).flatten(-2)  # (..., h, 2w): a b a b ...
    bottom = torch.stack([c, d], -1).flatten(-2)
    return torch.stack([top, bottom], -2).flatten(-3, -2)  # rows interleaved


def default_haar_levels(resolution: int) -> int:
    """As many levels as keep the coarsest band at least 4x4."""
    levels = 0
    while resolution % 2 ** (levels + 1) == 0 and resolution // 2 ** (levels + 1) >= 4:
        levels += 1
    return levels


class Haar(Basis):
    """``levels``-level orthonormal Haar transform.

    Layout: after ``L`` levels the top-left ``(H / 2^L, W / 2^L)`` block holds the approximation;
    the three other quadrants of the top-left ``(H / 2^(l-1), W / 2^(l-1))`` block hold the detail
    band of level ``l`` (``l = 1`` is the finest). So the bands that remain once the ``l`` finest
    detail levels are dropped are exactly the top-left ``(H / 2^l, W / 2^l)`` block, which is the
    ``(L - l)``-level Haar transform of ``2^l * avg_pool(x, 2^l)``: see :meth:`lowres` and
    :meth:`from_lowres`.
    """

    default_label = "frequency"

    def __init__(self, shape, levels: int = 3):
        super().__init__(shape)
        levels = int(levels)
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        _, h, w = self.shape
        f = 2**levels
        if h % f or w % f:
            raise ValueError(
                f"levels={levels} needs H and W divisible by 2^levels = {f}, got H={h}, W={w}"
            )
        self.levels = levels

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._transform(x, self.levels)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self._untransform(z, self.levels)

    @staticmethod
    def _transform(x: torch.Tensor, levels: int) -> torch.Tensor:
        if levels == 0:
            return x
        s = haar_step(x)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        inner = Haar._transform(s[..., :h, :w], levels - 1)
        return torch.cat([torch.cat([inner, s[..., :h, w:]], -1), s[..., h:, :]], -2)

    @staticmethod
    def _untransform(z: torch.Tensor, levels: int) -> torch.Tensor:
        if levels == 0:
            return z
        h, w = z.shape[-2] // 2, z.shape[-1] // 2
        inner = Haar._untransform(z[..., :h, :w], levels - 1)
        s = torch.cat([torch.cat([inner, z[..., :h, w:]], -1), z[..., h:, :]], -2)
        return haar_step_inverse(s)

    # ----------------------------------------------------------------------------- labels
    def level_map(self) -> torch.Tensor:
        """Long tensor ``(C, H, W)``: detail level ``1..L`` of each component, ``L + 1`` for the
        approximation."""
        c, h, w = self.shape
        lev = torch.full((h, w), self.levels + 1, dtype=torch.long)
        for l in range(self.levels, 0, -1):
            hb, wb = h >> (l - 1), w >> (l - 1)
            block = torch.zeros(h, w, dtype=torch.bool)
            block[:hb, :wb] = True
            block[: hb // 2, : wb // 2] = False
            lev[block] = l
        return lev.expand(c, h, w).clone()

    def labels(self) -> dict[str, torch.Tensor]:
        level = self.level_map().float()
        # Detail level l carries frequencies around 2^-l cycles/pixel; the approximation is below.
        return {
            "level": level,
            "frequency": 2.0 ** (-level),
            "channel": channel_label(self.shape),
        }

    def groups(self) -> tuple[torch.Tensor, list[str]]:
        _, h, w = self.shape
        names = [f"detail {l} ({h >> l}x{w >> l} x3)" for l in range(1, self.levels + 1)]
        names.append(f"approx ({h >> self.levels}x{w >> self.levels})")
        return self.level_map() - 1, names

    # --------------------------------------------------------------- lower-resolution views
    def _check_level(self, level: int) -> int:
        level = int(level)
        if not 0 <= level <= self.levels:
            raise ValueError(f"level must be in [0, {self.levels}], got {level}")
        return level

    def coarse_shape(self, level: int) -> tuple[int, int, int]:
        """``(C, H / 2^level, W / 2^level)``: shape of the bands left after dropping ``level``
        detail levels."""
        level = self._check_level(level)
        c, h, w = self.shape
        return (c, h >> level, w >> level)

    def coarse_basis(self, level: int) -> Haar:
        """The Haar basis of the lower-resolution image whose components are the top-left block."""
        level = self._check_level(level)
        return Haar(self.coarse_shape(level), self.levels - level)

    def coarse(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """Components ``(B, C, H, W)`` -> the bands left after ``level`` detail levels are dropped,
        ``(B, C, H / 2^level, W / 2^level)``."""
        _, h, w = self.coarse_shape(level)
        return z[..., :h, :w]

    def lowres(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """Components -> the image ``avg_pool(x, 2^level)`` ``(B, C, H / 2^level, W / 2^level)``,
        using only the bands coarser than ``level``."""
        check_images(z, self.shape, "z")
        level = self._check_level(level)
        return self._untransform(self.coarse(z, level), self.levels - level) / 2**level

    def from_lowres(self, image: torch.Tensor, level: int, z: torch.Tensor | None = None):
        """Inverse of :meth:`lowres`: the low-resolution image ``(B, C, H/2^l, W/2^l)`` becomes the
        coarse bands; finer bands are taken from ``z`` when given, else zero."""
        level = self._check_level(level)
        check_images(image, self.coarse_shape(level), "image")
        block = self._transform(image * 2**level, self.levels - level)
        if z is None:
            z = image.new_zeros(image.shape[0], *self.shape)
        else:
            check_images(z, self.shape, "z")
        h, w = block.shape[-2:]
        return F.pad(block, (0, z.shape[-1] - w, 0, z.shape[-2] - h)) + _mask_out(z, h, w)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, levels={self.levels}"


def _mask_out(z: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``z`` with its top-left ``(h, w)`` block set to zero (out of place)."""
    keep = torch.ones(z.shape[-2:], dtype=z.dtype, device=z.device)
    keep[:h, :w] = 0
    return z * keep
