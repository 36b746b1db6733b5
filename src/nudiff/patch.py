"""Patch Diffusion (Wang et al. 2023): training on random crops that know where they lie.

Each training step draws one patch size ``p`` for the global batch (from a generator seeded by
``(seed, step)``, so resume and DDP replay it) and crops every image at its own random position
``(top, left)``, a multiple of the basis's alignment. The network sees the crop and two
coordinate channels giving every pixel's position on the full canvas; sampling runs on the full
canvas with the full coordinate grid, so nothing changes there.

Coordinates follow the library's one convention (:func:`nudiff.models.dit.coordinate_channels`,
already used by DiT and LEGO): pixel centres mapped to ``[-1, 1]``, row ``(2 i + 1) / H - 1``
then column ``(2 j + 1) / W - 1``. The coordinates of a crop are the matching slice of the full
grid (:func:`crop_coordinates`).

The diffusion acts on basis components, so a crop of the image must be a crop of the
components (:class:`Crop`): true for the pixel basis, and for Haar when crops are aligned to and
sized in multiples of ``2^levels`` (each band then holds a crop of itself). Global bases (DCT,
Fourier, PCA) mix every pixel into every component and cannot be cropped. Every per-component
tensor (schedule coefficients, prior mean and scale, the denoiser's data moments, the loss's
band weights) is cropped with the same index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nudiff.bases import Basis, Haar, Identity
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import Schedule

_PATCH_PURPOSE = 16  # mixed into the patch-size seed (independent of the softness draws)


def crop_coordinates(
    top: torch.Tensor | int,
    left: torch.Tensor | int,
    size: int,
    canvas: tuple[int, int],
    device=None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Coordinate channels ``(B, 2, size, size)`` of square crops at ``(top, left)`` (``(B,)``
    or ints) of a ``canvas = (H, W)`` image: pixel ``(i, j)`` of a crop gets ``((2 (top + i) + 1)
    / H - 1, (2 (left + j) + 1) / W - 1)``, row then column; the same numbers as the slice
    ``[top : top + size, left : left + size]`` of the full grid
    (:func:`nudiff.models.dit.coordinate_channels`)."""
    top = torch.as_tensor(top, device=device).long().reshape(-1)
    left = torch.as_tensor(left, device=top.device).long().reshape(-1)
    h, w = canvas
    if size < 1 or size > min(h, w):
        raise ValueError(f"crop size must be in [1, {min(h, w)}], got {size}")
    if (top < 0).any() or (left < 0).any() or (top + size > h).any() or (left + size > w).any():
        raise ValueError(f"a {size}x{size} crop must fit the {h}x{w} canvas")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    k = torch.arange(size, device=top.device)
    rows = (2 * (top[:, None] + k) + 1).to(dtype) / h - 1  # (B, size)
    cols = (2 * (left[:, None] + k) + 1).to(dtype) / w - 1
    b = max(rows.shape[0], cols.shape[0])
    rows = rows[:, :, None].expand(b, size, size)
    cols = cols[:, None, :].expand(b, size, size)
    return torch.stack([rows, cols], dim=1)


def crop_alignment(basis: Basis) -> int:
    """The multiple that crop sizes and offsets need on ``basis`` (1: pixels, ``2^levels``:
    Haar); a ``ValueError`` for bases whose components are global."""
    if isinstance(basis, Identity):
        return 1
    if isinstance(basis, Haar):
        return 2**basis.levels
    raise ValueError(
        "patch training needs a basis whose components are local: identity or haar; "
        f"{type(basis).__name__.lower()} components are global (a crop of the image is not a "
        "crop of its components)"
    )


def crop_basis(basis: Basis, size: int) -> Basis:
    """The basis of a ``size x size`` crop (same kind, same levels)."""
    shape = (basis.shape[0], size, size)
    if isinstance(basis, Haar):
        return Haar(shape, basis.levels)
    crop_alignment(basis)  # raises for global bases
    return Identity(shape)


def crop_index(basis: Basis, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Flat indices ``(B, C * size * size)`` into ``basis``'s ``(C, H, W)`` components of the
    components of each crop, in the crop basis's own layout.

    Pixels: the crop itself. Haar (Mallat layout): a component of level exponent ``s`` (``l``
    for detail level ``l``, ``L`` for the approximation) at row ``b * (p >> s) + i`` of the crop's
    layout (``b`` the quadrant, 0 or 1) is at row ``b * (H >> s) + i + (top >> s)`` of the full
    one; columns alike. ``top``, ``left`` and ``size`` must be multiples of
    :func:`crop_alignment`.
    """
    align = crop_alignment(basis)
    c, h, w = basis.shape
    top, left = top.long().reshape(-1), left.long().reshape(-1)
    if size % align or (top % align).any() or (left % align).any():
        raise ValueError(
            f"crops of {type(basis).__name__} components need size and offsets that are "
            f"multiples of {align}, got size {size}"
        )
    if (top < 0).any() or (left < 0).any() or (top + size > h).any() or (left + size > w).any():
        raise ValueError(f"a {size}x{size} crop must fit the {h}x{w} canvas")
    device = top.device
    if isinstance(basis, Haar):
        s = Haar((1, size, size), basis.levels).level_map()[0].clamp(max=basis.levels)
    else:
        s = torch.zeros(size, size, dtype=torch.long)
    s = s.to(device)
    k = torch.arange(size, device=device)
    block = size >> s  # (p, p): side of the quadrant each component lies in
    i, j = k[:, None].expand(size, size), k[None, :].expand(size, size)
    row = (i // block) * (h >> s) + i % block  # at offset (0, 0)
    col = (j // block) * (w >> s) + j % block
    shift = 2**s
    row = row + torch.div(top.view(-1, 1, 1), shift, rounding_mode="floor")  # (B, p, p)
    col = col + torch.div(left.view(-1, 1, 1), shift, rounding_mode="floor")
    flat = row * w + col  # (B, p, p)
    chan = torch.arange(c, device=device).view(1, c, 1, 1) * (h * w)
    return (chan + flat[:, None]).flatten(1)


class Crop:
    """Square crops of one size, one per image, of the components of ``basis``.

    ``top``, ``left``: ``(B,)`` pixel offsets (multiples of :func:`crop_alignment`). Call
    :meth:`components` on any per-component tensor, :meth:`process` for the process of the
    crops, :meth:`coords` for the network's coordinate channels.
    """

    def __init__(self, basis: Basis, top: torch.Tensor, left: torch.Tensor, size: int):
        self.size, self.canvas = int(size), tuple(basis.shape[1:])
        self.top, self.left = top.long().reshape(-1), left.long().reshape(-1)
        self.basis = crop_basis(basis, self.size).to(top.device)
        self.index = crop_index(basis, self.top, self.left, self.size)
        self.full_shape = tuple(basis.shape)

    @property
    def batch(self) -> int:
        return self.top.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.basis.shape

    def components(self, z: torch.Tensor) -> torch.Tensor:
        """The crops ``(B, C, p, p)`` of components ``z`` shaped ``(C, H, W)``, ``(1, C, H,
        W)`` or ``(B, C, H, W)``; a tensor constant over components (``(..., 1, 1, 1)``, e.g. a
        scalar schedule's coefficients) is returned as it is."""
        if z.dim() == 0 or tuple(z.shape[-3:]) == (1, 1, 1):
            return z
        if z.dim() == 3:
            z = z[None]
        if tuple(z.shape[-3:]) != self.full_shape or z.shape[0] not in (1, self.batch):
            raise ValueError(
                f"can only crop (C, H, W) = {self.full_shape} components for {self.batch} "
                f"images, got {tuple(z.shape)}"
            )
        flat = z.flatten(1).expand(self.batch, -1)
        index = self.index.to(z.device)
        return flat.gather(1, index).view(self.batch, *self.shape)

    def coords(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Coordinate channels ``(B, 2, p, p)`` of the crops on the full canvas."""
        return crop_coordinates(self.top, self.left, self.size, self.canvas, dtype=dtype)

    def process(self, process: Process) -> Process:
        """The process of the crops: the crop basis, the crops of the schedule's coefficients
        and of the prior's mean and scale (per image)."""
        prior = _CroppedPrior(
            self.shape, self.components(process.prior.mean), self.components(process.prior.scale)
        )
        return Process(self.basis, CroppedSchedule(process.schedule, self), prior)


class _CroppedPrior(Prior):
    """A prior whose mean and scale are per image ``(B, C, p, p)`` (crops of a prior)."""

    def __init__(self, shape, mean: torch.Tensor, scale: torch.Tensor):
        torch.nn.Module.__init__(self)
        self.shape = tuple(shape)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)


class CroppedSchedule(Schedule):
    """A schedule on crops: the full schedule's coefficients, cropped per image (scalar
    schedules pass through unchanged)."""

    def __init__(self, schedule: Schedule, crop: Crop):
        super().__init__()
        self.inner, self.crop = schedule, crop
        self.t_min, self.inactive_log_snr = schedule.t_min, schedule.inactive_log_snr
        self.shape = crop.shape if schedule.shape is not None else None

    def alpha_sigma(self, t):
        a, s = self.inner.alpha_sigma(t)
        return self.crop.components(a), self.crop.components(s)

    def derivatives(self, t):
        da, ds = self.inner.derivatives(t)
        return self.crop.components(da), self.crop.components(ds)

    def log_snr(self, t):
        return self.crop.components(self.inner.log_snr(t))

    def prior_variance(self):
        return self.crop.components(self.inner.prior_variance())

    def breakpoints(self):
        return self.inner.breakpoints()


class PatchSizes:
    """The patch size of every step: one of ``sizes``, drawn from a generator seeded by
    ``(seed, step)`` (a function of the step: resume and DDP replay it), with probabilities
    ``probs`` (``schedule="fixed"``) or moving from the first size to the last over
    ``ramp_steps`` steps (``schedule="progressive"``, see :meth:`probs_at`).

    ``batch_multiplier``: a step at size ``p`` loads ``round((R / p)^2)`` (``area``: about as
    many pixels per step as a full-image batch), ``round(R / p)`` (``side``) or 1 (``none``)
    times the batch (``True`` / ``False`` mean ``area`` / ``none``); ``align``: offsets (and
    sizes) are multiples of it."""

    MULTIPLIERS = ("area", "side", "none")

    def __init__(
        self,
        sizes: Sequence[int],
        resolution: int,
        probs: Sequence[float] | None = None,
        batch_multiplier: bool | str = True,
        seed: int = 0,
        align: int = 1,
        schedule: str = "fixed",
        ramp_steps: int | None = None,
    ):
        self.sizes = [int(p) for p in sizes]
        self.resolution, self.align = int(resolution), int(align)
        if not self.sizes:
            raise ValueError("patch sizes must not be empty")
        for p in self.sizes:
            if not 1 <= p <= self.resolution or p % self.align:
                raise ValueError(
                    f"patch size {p} must be in [1, {self.resolution}] and a multiple of "
                    f"{self.align}"
                )
        w = torch.ones(len(self.sizes)) if probs is None else torch.as_tensor(probs).double()
        if w.shape != (len(self.sizes),) or not (w >= 0).all() or not w.sum() > 0:
            raise ValueError(
                f"patch probs need one non-negative value per size ({len(self.sizes)}), not all "
                f"0; got {probs}"
            )
        self.probs = (w.double() / w.sum()).tolist()
        if isinstance(batch_multiplier, bool):
            batch_multiplier = "area" if batch_multiplier else "none"
        if batch_multiplier not in self.MULTIPLIERS:
            raise ValueError(
                f"batch_multiplier must be area, side or none, got {batch_multiplier!r}"
            )
        if schedule not in ("fixed", "progressive"):
            raise ValueError(f"patch schedule must be fixed or progressive, got {schedule!r}")
        if schedule == "progressive" and not (ramp_steps and ramp_steps > 0):
            raise ValueError("a progressive patch schedule needs ramp_steps > 0")
        self.batch_multiplier, self.seed = batch_multiplier, int(seed)
        self.schedule, self.ramp_steps = schedule, ramp_steps

    def probs_at(self, step: int) -> list[float]:
        """The probabilities of the sizes at ``step``. Progressive: at the fraction ``f`` of
        the ramp, size ``k`` of ``K`` gets ``max(0, 1 - |k - f (K - 1)|)``: all on the first
        size at step 0, shared by two neighbours in between, all on the last from the ramp's
        end."""
        if self.schedule == "fixed":
            return self.probs
        k = len(self.sizes)
        pos = min(1.0, step / self.ramp_steps) * (k - 1)
        return [max(0.0, 1 - abs(i - pos)) for i in range(k)]

    def size_for_step(self, step: int) -> int:
        state = np.random.SeedSequence([self.seed, _PATCH_PURPOSE, int(step)]).generate_state(1)
        g = torch.Generator().manual_seed(int(state[0]))
        k = int(torch.multinomial(torch.tensor(self.probs_at(step)), 1, generator=g))
        return self.sizes[k]

    def multiplier(self, size: int) -> int:
        """How many times the batch a step at patch size ``size`` loads."""
        if self.batch_multiplier == "none":
            return 1
        ratio = self.resolution / size
        return max(1, round(ratio**2 if self.batch_multiplier == "area" else ratio))

    def multiplier_for_step(self, step: int) -> int:
        return self.multiplier(self.size_for_step(step))

    def offsets(self, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """``(2, n)`` random aligned ``(top, left)`` of ``size`` crops, uniform over the
        positions that fit."""
        positions = (self.resolution - size) // self.align + 1
        draw = torch.randint(positions, (2, n), generator=generator, device=generator.device)
        return draw * self.align
