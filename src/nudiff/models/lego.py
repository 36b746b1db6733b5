"""LEGO bricks: a stack of small DiTs, each shared across the non-overlapping regions of an image.

After Zheng et al., "Learning Stackable and Skippable LEGO Bricks for Efficient, Reconfigurable,
and Variable-Resolution Diffusion Modeling". Brick ``k`` cuts its input into ``r_k x r_k``
regions (pixels), runs one DiT with shared weights on all of them at once and puts the results
back. Its input is the noisy image, two coordinate channels (where each pixel is on the canvas)
and, after the first brick, the previous brick's output; every brick outputs a full prediction,
so bricks are trained jointly as denoisers of their own and later ones can be skipped at
sampling time. Region sizes are fixed in pixels: a larger canvas just has more regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from nudiff.models.dit import DiT
from nudiff.models.layers import check_inputs, check_positive, coordinate_channels, with_coordinates

__all__ = [
    "LEGO",
    "Brick",
    "check_bricks",
    "coordinate_channels",
    "fold_regions",
    "lego_stack",
    "unfold_regions",
]


def unfold_regions(x: torch.Tensor, r: int | None) -> torch.Tensor:
    """``(B, C, H, W) -> (B * (H/r) * (W/r), C, r, r)``: the non-overlapping ``r x r`` regions.

    Region ``(i, j)`` of image ``b`` (``x[b, :, i r:(i+1) r, j r:(j+1) r]``) is at index
    ``(b * H/r + i) * W/r + j``: the regions of one image are consecutive. ``r`` of ``None`` or 0
    means the whole image, one region: ``x`` itself. Inverse: :func:`fold_regions`.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be a rank-4 tensor (B, C, H, W), got {tuple(x.shape)}")
    if not r:
        return x
    b, c, h, w = x.shape
    if r < 0 or h % r or w % r:
        raise ValueError(f"the region size {r} must divide the image size {h} x {w}")
    return x.reshape(b, c, h // r, r, w // r, r).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, r, r)


def fold_regions(
    y: torch.Tensor, r: int | None, batch: int, height: int, width: int
) -> torch.Tensor:
    """``(batch * (H/r) * (W/r), C, r, r) -> (batch, C, H, W)``: the inverse of
    :func:`unfold_regions` (``r`` of ``None`` or 0: ``y`` is already the whole image)."""
    if r and (r < 0 or height % r or width % r):
        raise ValueError(f"the region size {r} must divide the image size {height} x {width}")
    nh, nw = (height // r, width // r) if r else (1, 1)
    want = (batch * nh * nw, height // nh, width // nw)
    if y.dim() != 4 or (y.shape[0], *y.shape[2:]) != want:
        raise ValueError(
            f"y must have shape ({want[0]}, C, {want[1]}, {want[2]}) for {batch} images of "
            f"{height} x {width} in regions of {r or 'the whole image'}, got {tuple(y.shape)}"
        )
    if not r:
        return y
    c = y.shape[1]
    return (
        y.reshape(batch, nh, nw, c, r, r).permute(0, 3, 1, 4, 2, 5).reshape(batch, c, height, width)
    )


class Brick(nn.Module):
    """One LEGO brick: a :class:`DiT` applied with shared weights to every ``r x r`` region.

    ``(B, C_in, H, W), (B, F) -> (B, C_out, H, W)``. All regions of all images go through the
    DiT as one batch; each region is conditioned on its image's noise embedding, computed once
    per image. ``region = 0``: the whole image is one region (any ``H, W`` divisible by the
    patch; a larger image extends the DiT's sin-cos position grid). ``dit_options``
    (``stem_channels``, ``conv_head``, ``skips``) go to the :class:`DiT`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        region: int,
        patch: int,
        depth: int,
        width: int,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        noise_features: int = 1,
        num_classes: int | None = None,
        **dit_options,
    ):
        super().__init__()
        if region < 0 or patch < 1 or (region and region % patch):
            raise ValueError(
                f"need region >= 0 (0 = whole image) and a patch dividing it, got region={region}, "
                f"patch={patch}"
            )
        self.region = region
        self.dit = DiT(
            in_channels,
            out_channels,
            patch,
            width,
            depth,
            heads,
            mlp_ratio,
            noise_features,
            num_classes=num_classes,
            **dit_options,
        )

    @property
    def downsample_factor(self) -> int:
        """``H`` and ``W`` must be multiples of this: the region, or the patch for region 0."""
        return self.region or self.dit.patch_size

    def forward(
        self, h: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``h``: ``(B, C_in, H, W)``; ``c_noise``: ``(B, F)`` (validated by the caller);
        ``labels``: ``(B,)`` for a class-conditional brick."""
        b, _, height, width = h.shape
        emb = self.dit.embed(c_noise, labels)
        out = self.dit.denoise(unfold_regions(h, self.region), emb)
        return fold_regions(out, self.region, b, height, width)

    def count_macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of this brick on one ``height x width`` image (as it runs)."""
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(
                f"height and width must be divisible by {self.downsample_factor}, "
                f"got {height} x {width}"
            )
        if not self.region:
            return self.dit.count_macs(height, width)
        r = self.region
        return self.dit.count_macs(r, r, regions=(height // r) * (width // r))


class LEGO(nn.Module):
    """A stack of LEGO bricks ``(B, C_in, H, W), (B,) | (B, F) -> (B, C_out, H, W)``.

    Brick ``k`` sees ``concat([out_{k-1} (k > 0), x, coords])``, with ``coords`` the
    :func:`coordinate_channels` of the canvas being denoised, and outputs a full prediction
    ``out_k`` with ``C_out`` channels. :meth:`forward` returns the last active brick's output;
    :meth:`forward_all` every brick's, for a joint loss. Every brick's DiT has a zero-initialised
    decoder, so a fresh stack outputs 0 at every brick.

    Args:
        in_channels: image channels ``C_in``.
        out_channels: output channels ``C_out`` (default ``in_channels``).
        bricks: one ``(region, patch, depth, width)`` per brick, first brick first: region side
            in pixels (0 = the whole image), patch side, transformer depth and width of its DiT
            (see :func:`lego_stack`).
        heads: attention heads of every brick.
        mlp_ratio: MLP hidden width / width, every brick.
        noise_features: ``F``, the number of noise-conditioning scalars per image.
        num_classes: class labels embedded by every brick (None: no labels; ``labels=None``:
            the null label of classifier-free guidance).
        stem_channels, conv_head, skips: every brick's :class:`DiT` options (a conv stem, a
            conv head, U-ViT skips).
    """

    #: the coordinate channels every brick sees (always on)
    coord_channels = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        bricks: Sequence[tuple[int, int, int, int]] = (
            (4, 2, 2, 64),
            (16, 2, 2, 64),
            (0, 2, 2, 64),
        ),
        heads: int = 4,
        mlp_ratio: float = 4.0,
        noise_features: int = 1,
        num_classes: int | None = None,
        stem_channels: int = 0,
        conv_head: bool = False,
        skips: bool = False,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        check_positive(
            in_channels=in_channels, out_channels=out_channels, noise_features=noise_features
        )
        bricks = check_bricks(bricks)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.noise_features = noise_features
        self.bricks = nn.ModuleList(
            Brick(
                in_channels + 2 + (out_channels if k else 0),
                out_channels,
                region,
                patch,
                depth,
                width,
                heads,
                mlp_ratio,
                noise_features,
                num_classes,
                stem_channels=stem_channels,
                conv_head=conv_head,
                skips=skips,
            )
            for k, (region, patch, depth, width) in enumerate(bricks)
        )
        self.num_classes = num_classes
        self._active_bricks: int | None = None

    @property
    def num_bricks(self) -> int:
        return len(self.bricks)

    @property
    def active_bricks(self) -> int | None:
        """Run only the first ``k`` bricks in :meth:`forward` (``None``: all); later ones are
        never called."""
        return self._active_bricks

    @active_bricks.setter
    def active_bricks(self, k: int | None) -> None:
        self._active_bricks = None if k is None else self._brick_count(k)

    def _brick_count(self, k: int | None) -> int:
        """``k`` validated, or the active count (all bricks when unset) for ``None``."""
        if k is None:
            return self.num_bricks if self._active_bricks is None else self._active_bricks
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_bricks:
            raise ValueError(
                f"the number of bricks must be an int in [1, {self.num_bricks}], got {k}"
            )
        return k

    @property
    def downsample_factor(self) -> int:
        """``H`` and ``W`` must be multiples of this: the lcm of the bricks' regions (the patch
        for a whole-image brick)."""
        return math.lcm(*(brick.downsample_factor for brick in self.bricks))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        k: int,
        labels: torch.Tensor | None,
        coords: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The outputs ``(B, C_out, H, W)`` of the first ``k`` bricks; ``coords`` ``(B, 2, H,
        W)``: the coordinate channels (None: the full grid of the input; a patch-trained model
        gets its crops')."""
        c_noise = check_inputs(
            x, c_noise, self.in_channels, self.noise_features, self.downsample_factor
        )
        x = with_coordinates(x, coords, 2)
        outs: list[torch.Tensor] = []
        for brick in self.bricks[:k]:
            outs.append(brick(torch.cat([outs[-1], x], dim=1) if outs else x, c_noise, labels))
        return outs

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` ``(B, C_in, H, W)`` given ``c_noise`` ``(B,)`` | ``(B, F)`` (and class
        ``labels`` ``(B,)``, coordinate channels ``coords``) with the first
        :attr:`active_bricks` bricks. Returns the last one's output ``(B, C_out, H, W)``."""
        return self._run(x, c_noise, self._brick_count(None), labels, coords)[-1]

    def forward_all(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every brick's output ``(B, C_out, H, W)``, first brick first, ignoring
        :attr:`active_bricks` (for the joint loss)."""
        return self._run(x, c_noise, self.num_bricks, labels, coords)

    def count_macs(self, height: int, width: int, bricks: int | None = None) -> int:
        """Multiply-accumulates of running the first ``bricks`` bricks (default: the active
        ones) on one ``height x width`` image: the sum of :meth:`Brick.count_macs`, i.e. each
        brick's ``DiT.count_macs`` over its regions (same conventions as ``UNet.count_macs``)."""
        f = self.downsample_factor
        if height < 1 or width < 1 or height % f or width % f:
            raise ValueError(
                f"height and width must be divisible by downsample_factor={f}, "
                f"got {height} x {width}"
            )
        k = self._brick_count(bricks)
        return sum(brick.count_macs(height, width) for brick in self.bricks[:k])


def lego_stack(
    kind: str, resolution: int, width: int = 64, depth: int = 2, patch: int = 2
) -> list[tuple[int, int, int, int]]:
    """The ``(region, patch, depth, width)`` brick list of a LEGO stacking at ``resolution``.

    * ``pg`` (progressive growth): regions ``4, resolution / 2, resolution``, local first;
    * ``pr`` (progressive refinement): ``resolution, resolution / 2, 4``, global first;
    * ``u``: ``resolution, resolution / 4, resolution``.

    Regions of side 4 or less use patch ``min(patch, 2)`` (at least 4 tokens for a 4x4 region),
    the others ``patch``; every brick gets ``depth`` and ``width``. Regions are in pixels: at a
    larger sampling size the ``resolution`` bricks tile the canvas, each tile placed by the
    coordinate channels (write region 0 into a brick list for a brick that always sees the
    whole image).
    """
    regions = {
        "pg": [4, resolution // 2, resolution],
        "pr": [resolution, resolution // 2, 4],
        "u": [resolution, resolution // 4, resolution],
    }
    if kind not in regions:
        raise ValueError(f"kind must be one of {', '.join(regions)}; got {kind!r}")
    if min(regions[kind]) < 4:
        raise ValueError(f"{kind} at resolution {resolution} has regions under 4: {regions[kind]}")
    return check_bricks(
        [(r, min(patch, 2) if r <= 4 else patch, depth, width) for r in regions[kind]], resolution
    )


def check_bricks(
    bricks: Sequence[tuple[int, int, int, int]], resolution: int | None = None
) -> list[tuple[int, int, int, int]]:
    """Validate ``(region, patch, depth, width)`` bricks (as tuples); with ``resolution``, also
    that each tiles ``resolution x resolution`` images. Raises a one-line ``ValueError``."""
    bricks = [tuple(b) for b in bricks]
    if not bricks or any(len(b) != 4 for b in bricks):
        raise ValueError(
            f"bricks must be a non-empty list of (region, patch, depth, width), got {bricks}"
        )
    for i, (region, patch, depth, width) in enumerate(bricks):
        if region < 0 or patch < 1 or depth < 1:
            raise ValueError(
                f"brick {i}: need region >= 0 (0 = whole image), patch >= 1 and depth >= 1, "
                f"got {bricks[i]}"
            )
        if width < 4 or width % 4:
            raise ValueError(f"brick {i}: width must be a positive multiple of 4, got {width}")
        if region % patch:
            raise ValueError(f"brick {i}: patch {patch} must divide region {region}")
        if resolution is not None and resolution % (region or patch):
            what = f"region {region}" if region else f"patch {patch} (whole-image region)"
            raise ValueError(f"brick {i}: {what} must divide the resolution {resolution}")
    return bricks
