"""Procedural mountain panoramas: a built-in data set that is stationary along the width."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nudiff.data.procedural import ProceduralImages

_BANDS = 12  # ridge frequency bands, log-spaced from _F_LO to _F_HI cycles per image height
_F_LO, _F_HI = 0.25, 8.0
_PER_IMAGE, _PER_LAYER = 5, 3 + 2 * _BANDS  # uniforms per image and per ridge layer


class PanoramaDataset(ProceduralImages):
    """Layered mountain ridges against a sky: ``layers`` silhouettes, far (high, pale, hazy) to
    near (low, dark), each a flat colour under a ridge line that wanders up and down.

    Nothing depends on the horizontal position but through the ridge lines, and each ridge line
    ``h(x) = base + amp * sum_k a_k cos(2 pi f_k x + phi_k)`` has uniform random phases, so
    every image is a window of a strictly stationary strip: any ``W`` consecutive columns have
    the same law wherever they are. This is the data on which column-wise generation and
    extension (``nudiff extend``) can show a continuation. The ridge spectrum falls as
    ``f**-exponent`` (2: the roughness of Brownian motion, mountain-like) over 12 bands from
    0.25 to 8 cycles per image height, one random frequency per band.

    Coordinates are in units of the image height, so ``resolution`` only changes the sampling:
    item ``i`` at 64 pixels is item ``i`` at 32, twice as fine. ``width`` (default:
    ``resolution``) is the number of columns, at the same pixel size: the first ``resolution``
    columns of a wider item are the square item, and the rest its continuation (held-out
    strips with their ground truth). Item ``i`` depends only on ``(seed, i)``: all its
    randomness is one vector of uniforms from ``np.random.default_rng((seed, i))``.
    Rendering is vectorised over a batch (``batch``, used by DataLoader through
    ``__getitems__``). Ridge edges are antialiased with a one-pixel ramp.

    ``__getitem__`` returns a float32 ``(channels, resolution, width)`` tensor in ``[-1, 1]``.
    """

    def __init__(
        self,
        size: int = 50_000,
        resolution: int = 32,
        channels: int = 3,
        seed: int = 0,
        layers: int = 3,
        exponent: float = 2.0,
        width: int | None = None,
    ):
        width = resolution if width is None else width
        super().__init__(size, resolution, channels, seed)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not 1 <= layers <= 8:
            raise ValueError(f"layers must be in 1..8, got {layers}")
        if not (math.isfinite(exponent) and 0 <= exponent <= 6):
            raise ValueError(f"exponent must be in [0, 6], got {exponent}")
        self.layers, self.exponent, self.width = layers, float(exponent), width
        self.shape = (channels, resolution, width)

    def batch(self, indices: Sequence[int], width: int | None = None) -> torch.Tensor:
        """Images ``indices`` as one float32 ``(B, C, H, width)`` tensor in ``[-1, 1]``
        (``width``: default the data set's; a wider strip continues the same images)."""
        width = self.width if width is None else int(width)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        u = np.stack([self._uniforms(i) for i in indices])
        return self._to_tensor(self._render(u, width))

    def _uniforms(self, i: int) -> np.ndarray:
        return super()._uniforms(i, _PER_IMAGE + _PER_LAYER * self.layers)

    def _ridges(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per-layer uniforms ``(D, B, L)`` and column positions ``(W,)`` -> ridge heights
        ``(B, L, W)`` (0 top, 1 bottom of the image)."""
        n = self.layers
        depth = (np.arange(n) + 1.0) / n  # 1/L far ... 1 near
        base = 0.30 + 0.45 * (np.arange(n) + 0.5) / n + (0.10 / n) * (s[0] - 0.5)
        amp = (0.05 + 0.06 * s[1]) * (0.6 + 0.4 * depth)
        edges = np.geomspace(_F_LO, _F_HI, _BANDS + 1)
        lo, ratio = edges[:-1, None, None, None], (edges[1:] / edges[:-1])[:, None, None, None]
        freq = lo * ratio ** s[3 : 3 + _BANDS, ..., None]  # (K, B, L, 1), log-uniform in band
        phase = 2 * math.pi * s[3 + _BANDS :, ..., None]
        # band variance ~ integral of f**-exponent over the band; unit total variance
        if abs(self.exponent - 1) < 1e-9:
            var = np.log(edges[1:] / edges[:-1])
        else:
            var = (edges[1:] ** (1 - self.exponent) - edges[:-1] ** (1 - self.exponent)) / (
                1 - self.exponent
            )
        a = np.sqrt(2 * var / var.sum())[:, None, None, None]
        wave = (a * np.cos(2 * math.pi * freq * x + phase)).sum(0)  # (B, L, W)
        return base[..., None] + amp[..., None] * wave

    def _render(self, u: np.ndarray, width: int) -> np.ndarray:
        """Uniforms ``(B, D)`` -> images ``(B, 3, H, width)`` float32 in ``[0, 1]``."""
        b, n, res = u.shape[0], self.layers, self.resolution
        img_u = u[:, :_PER_IMAGE].T  # (5, B)
        s = u[:, _PER_IMAGE:].reshape(b, n, _PER_LAYER).transpose(2, 0, 1)  # (D, B, L)
        x = ((np.arange(width) + 0.5) / res).astype(np.float64)
        y = ((np.arange(res) + 0.5) / res).astype(np.float32)[:, None]  # (H, 1)
        ridge = self._ridges(s, x).astype(np.float32)  # (B, L, W)
        cover = np.clip(0.5 + (y - ridge[:, :, None, :]) * res, 0.0, 1.0)  # (B, L, H, W)

        # sky: a vertical gradient from a deep top colour to a pale horizon, hue per image
        hue = img_u[0]
        top = _hsv(hue, 0.25 + 0.45 * img_u[1], 0.55 + 0.3 * img_u[2])  # (B, 3)
        haze = _hsv(hue + 0.05, 0.15 * img_u[1], 0.85 + 0.15 * img_u[2])
        g = y[None, None, :, 0, None]  # (1, 1, H, 1)
        img = top[:, :, None, None] + (haze - top)[:, :, None, None] * np.minimum(g / 0.7, 1.0)
        img = np.broadcast_to(img, (b, 3, res, width)).astype(np.float32)

        # layers: a ground hue per image; nearer layers darker and more saturated, far ones
        # fade into the haze (aerial perspective); painter's order far to near
        depth = (np.arange(n) + 1.0) / n
        ground = (img_u[3][:, None] + 0.08 * (s[2] - 0.5)) % 1.0  # (B, L)
        value = 0.75 - 0.55 * depth * (0.6 + 0.4 * img_u[4][:, None])
        solid = _hsv(ground, 0.35 + 0.35 * depth, value)  # (B, L, 3)
        mix = (0.25 + 0.75 * depth)[None, :, None]
        color = (haze[:, None] + mix * (solid - haze[:, None])).astype(np.float32)
        for j in range(n):
            img = img + cover[:, j, None] * (color[:, j, :, None, None] - img)
        return np.clip(img, 0.0, 1.0)


def _hsv(h, s, v) -> np.ndarray:
    """Hue, saturation and value ``(...)`` (broadcast) -> RGB ``(..., 3)`` in ``[0, 1]``."""
    h, s, v = np.broadcast_arrays(np.asarray(h) % 1.0, s, v)
    k = (np.array([5.0, 3.0, 1.0]) + 6 * h[..., None]) % 6
    return v[..., None] * (1 - s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1))
