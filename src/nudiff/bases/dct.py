"""Orthonormal 2-D DCT-II and the real Fourier basis, as separable matrix products."""

from __future__ import annotations

import math

import torch

from nudiff.bases.base import Basis, channel_label, octave_groups


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(n, n)`` (float64); row ``k`` has frequency ``k / 2n``."""
    k = torch.arange(n, dtype=torch.float64).view(n, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, n)
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def real_fourier_matrix(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal real DFT matrix ``(n, n)`` and each row's frequency in cycles/sample.

    Rows: the constant, then ``cos`` and ``sin`` of each frequency ``k / n`` for
    ``0 < k < n / 2``, then the alternating Nyquist row when ``n`` is even. Using cos/sin pairs
    instead of complex exponentials keeps everything real without Hermitian bookkeeping.
    """
    i = torch.arange(n, dtype=torch.float64)
    rows, freqs = [torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64)], [0.0]
    for k in range(1, (n + 1) // 2):
        phase = 2 * math.pi * k * i / n
        rows += [math.sqrt(2.0 / n) * torch.cos(phase), math.sqrt(2.0 / n) * torch.sin(phase)]
        freqs += [k / n, k / n]
    if n % 2 == 0:
        rows.append(torch.cos(math.pi * i) / math.sqrt(n))
        freqs.append(0.5)
    return torch.stack(rows), torch.tensor(freqs, dtype=torch.float64)


class _Separable(Basis):
    """``z = M_H x M_W^T`` per channel, ``M_H`` ``(H, H)`` and ``M_W`` ``(W, W)`` orthonormal."""

    def __init__(self, shape, mh: torch.Tensor, mw: torch.Tensor, fh, fw):
        super().__init__(shape)
        self.register_buffer("mh", mh.float(), persistent=False)
        self.register_buffer("mw", mw.float(), persistent=False)
        # float64 copies so double-precision tests are exact to ~1e-15
        self.register_buffer("mh64", mh, persistent=False)
        self.register_buffer("mw64", mw, persistent=False)
        c, h, w = self.shape
        freq = torch.sqrt(fh.view(h, 1) ** 2 + fw.view(1, w) ** 2)
        self._freq = freq.float().expand(c, h, w).clone()
        self._row = fh.float().view(1, h, 1).expand(c, h, w).clone()
        self._col = fw.float().view(1, 1, w).expand(c, h, w).clone()

    def _mats(self, x):
        if x.dtype == torch.float64:
            return self.mh64, self.mw64
        return self.mh.to(x.dtype), self.mw.to(x.dtype)

    def _forward(self, x):
        mh, mw = self._mats(x)
        return mh @ x @ mw.T

    def _inverse(self, z):
        mh, mw = self._mats(z)
        return mh.T @ z @ mw

    def labels(self):
        return {
            "frequency": self._freq,
            "row_frequency": self._row,
            "col_frequency": self._col,
            "channel": channel_label(self.shape),
        }

    def groups(self):
        return octave_groups(self._freq)


class DCT(_Separable):
    """Orthonormal 2-D DCT-II. Natural images and stationary fields are nearly diagonal in it."""

    def __init__(self, shape):
        _, h, w = shape
        super().__init__(
            shape,
            dct_matrix(h),
            dct_matrix(w),
            torch.arange(h, dtype=torch.float64) / (2 * h),
            torch.arange(w, dtype=torch.float64) / (2 * w),
        )


class Fourier(_Separable):
    """Orthonormal real 2-D Fourier basis (separable cos/sin products).

    A periodic stationary field with an isotropic spectrum is exactly diagonal in it: the
    product ``cos(a x) cos(b y)`` mixes the modes ``(a, b)`` and ``(a, -b)``, which share ``|k|``.
    """

    def __init__(self, shape):
        _, h, w = shape
        mh, fh = real_fourier_matrix(h)
        mw, fw = real_fourier_matrix(w)
        super().__init__(shape, mh, mw, fh, fw)
