"""Conditional tasks: a degradation ``y = A(x)`` applied on the fly, and how well a sample
agrees with its condition.

Images are ``(B, C, H, W)`` in ``[-1, 1]``. A task gives the condition ``y`` of a batch, its
shape, a network view of ``y`` at the resolution of ``x`` (:meth:`Task.upsample`) and
:meth:`Task.consistency`: the mean squared error between the degraded sample and ``y`` where ``y``
observes the image (e.g. the pooled sample against the low-resolution input, the unmasked
pixels for inpainting). Random degradations (random boxes) depend only on ``(seed, index)`` of
each image, so a dataset item is the same every epoch and on every rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nudiff.data.transforms import LUMA


class Task:
    """Base class: subclasses implement :meth:`y_shape` and :meth:`degrade`."""

    name = "task"

    def check(self, shape: tuple[int, int, int]) -> None:
        """Raise ``ValueError`` if images of ``shape`` ``(C, H, W)`` do not fit the task."""

    def y_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        raise NotImplementedError

    def degrade(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` -> ``y`` ``(B, *y_shape)``; ``index`` ``(B,)`` are the images'
        dataset indices (random degradations are seeded by them)."""
        raise NotImplementedError

    def observed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A(x), weight)``: the sample degraded like ``y`` and where ``y`` observes it."""
        return self.degrade(x), torch.ones_like(y)

    def consistency(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error ``(B,)`` between the degraded samples ``x`` and their conditions
        ``y`` on the observed part (0 for a sample that agrees exactly)."""
        got, weight = self.observed(x, y)
        err = ((got - _values(self, y)) ** 2 * weight).flatten(1).sum(1)
        return err / weight.flatten(1).sum(1).clamp_min(1)

    def naive(self, y: torch.Tensor) -> torch.Tensor:
        """The classical reconstruction from ``y`` alone ``(B, C, H, W)``: the baseline a model
        must beat."""
        raise NotImplementedError

    def upsample(self, y: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """``y`` as extra input channels at the image resolution ``(B, C_y, H, W)``."""
        if y.shape[-2:] == shape[-2:]:
            return y
        return F.interpolate(y, size=shape[-2:], mode="nearest")


def _values(task: Task, y: torch.Tensor) -> torch.Tensor:
    return y[:, :-1] if isinstance(task, Inpainting) else y


class SuperResolution(Task):
    """``y = avg_pool(x, factor)``: the Haar approximation of ``log2(factor)`` levels (divided by
    ``factor``), i.e. the low-resolution image."""

    def __init__(self, factor: int = 2):
        factor = int(factor)
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"super-resolution factor must be a power of 2 >= 2, got {factor}")
        self.factor = factor
        self.name = f"sr{factor}"

    def check(self, shape):
        _, h, w = shape
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"x{self.factor} super-resolution needs H and W divisible by {self.factor}, "
                f"got {h}x{w}"
            )

    def y_shape(self, shape):
        self.check(shape)
        c, h, w = shape
        return (c, h // self.factor, w // self.factor)

    def degrade(self, x, index=None):
        self.check(tuple(x.shape[1:]))
        return F.avg_pool2d(x, self.factor)

    def naive(self, y):
        """Bilinear upsampling."""
        return F.interpolate(y, scale_factor=self.factor, mode="bilinear", align_corners=False)


class Colorization(Task):
    """``y`` = the luma of an RGB image (ITU-R BT.601, as Pillow's grey conversion)."""

    name = "colorization"

    def check(self, shape):
        if shape[0] != 3:
            raise ValueError(f"colorization needs RGB images (3 channels), got {shape[0]}")

    def y_shape(self, shape):
        self.check(shape)
        return (1, *shape[1:])

    def degrade(self, x, index=None):
        self.check(tuple(x.shape[1:]))
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)

    def naive(self, y):
        """The grey image as RGB (its luma is ``y``: the weights sum to 1)."""
        return y.expand(-1, 3, -1, -1).clone()


class Inpainting(Task):
    """``y`` = the image with missing pixels set to 0, and the mask (1 = missing) as a last
    channel, ``(C + 1, H, W)``.

    ``mask``: ``center`` (a centred rectangle) or ``boxes`` (random rectangles per image, seeded
    by ``(seed, index)``, added until ``coverage`` of the pixels are missing); ``coverage``: the
    missing fraction (25% by default).
    """

    def __init__(self, mask: str = "center", coverage: float = 0.25, seed: int = 0):
        if mask not in ("center", "boxes"):
            raise ValueError(f"inpainting mask must be center or boxes, got {mask!r}")
        if not 0 < coverage < 1:
            raise ValueError(f"inpainting coverage must be in (0, 1), got {coverage}")
        self.mask, self.coverage, self.seed = mask, float(coverage), int(seed)
        self.name = f"inpaint-{mask}"

    def check(self, shape):
        _, h, w = shape
        if min(h, w) < 4:
            raise ValueError(f"inpainting needs images of at least 4x4, got {h}x{w}")

    def y_shape(self, shape):
        self.check(shape)
        c, h, w = shape
        return (c + 1, h, w)

    def masks(self, n: int, shape, index=None, device=None) -> torch.Tensor:
        """``(n, 1, H, W)`` float masks, 1 where the image is missing."""
        _, h, w = shape
        if self.mask == "center":
            bh = min(h, max(1, round(h * math.sqrt(self.coverage))))
            bw = min(w, max(1, round(self.coverage * h * w / bh)))
            m = torch.zeros(1, 1, h, w, device=device)
            top, left = (h - bh) // 2, (w - bw) // 2
            m[..., top : top + bh, left : left + bw] = 1
            return m.expand(n, 1, h, w)
        index = torch.arange(n) if index is None else torch.as_tensor(index).cpu()
        return torch.stack([self._boxes(int(i), h, w) for i in index]).to(device)

    def _boxes(self, i: int, h: int, w: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        m = torch.zeros(1, h, w)
        target = self.coverage * h * w
        while m.sum() < target:
            bh = int(torch.randint(max(1, h // 8), max(2, h // 2) + 1, (1,), generator=g))
            bw = int(torch.randint(max(1, w // 8), max(2, w // 2) + 1, (1,), generator=g))
            top = int(torch.randint(0, h - bh + 1, (1,), generator=g))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=g))
            m[:, top : top + bh, left : left + bw] = 1
        return m

    def degrade(self, x, index=None):
        self.check(tuple(x.shape[1:]))
        m = self.masks(x.shape[0], tuple(x.shape[1:]), index, x.device).to(x.dtype)
        return torch.cat([x * (1 - m), m], 1)

    def naive(self, y):
        """Missing pixels filled with the mean of the image's observed pixels, per channel."""
        values, keep = y[:, :-1], 1 - y[:, -1:]
        mean = (values * keep).sum((-2, -1), keepdim=True) / keep.sum((-2, -1), keepdim=True)
        return values * keep + mean * (1 - keep)

    def observed(self, x, y):
        keep = 1 - y[:, -1:]
        return x * keep, keep.expand_as(x)


def build_task(name: str, **kw) -> Task:
    """``sr2 | sr4 | inpaint-center | inpaint-boxes | colorization`` (``coverage`` and ``seed``
    for inpainting)."""
    if name in ("sr2", "sr4"):
        return SuperResolution(int(name[2:]))
    if name == "colorization":
        return Colorization()
    if name in ("inpaint-center", "inpaint-boxes"):
        return Inpainting(name.split("-")[1], **kw)
    raise ValueError(
        f"task must be one of sr2, sr4, inpaint-center, inpaint-boxes, colorization; got {name!r}"
    )
