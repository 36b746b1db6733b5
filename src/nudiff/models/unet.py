"""A resolution-agnostic UNet denoiser backbone in the DDPM / ADM style."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nudiff.models.labels import LabelEmbedding
from nudiff.models.layers import (
    check_coord_channels,
    check_inputs,
    check_positive,
    count_forward_macs,
    embed_noise,
    noise_frequencies,
    noise_mlp,
    with_coordinates,
    zero_init,
)

__all__ = ["UNet"]


def _largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is ``<= at_most`` (at least 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def _norm(channels: int, norm_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_largest_divisor(channels, norm_groups), channels)


class ResBlock(nn.Module):
    """Residual block with scale-shift (FiLM) noise conditioning.

    ``(B, C_in, H, W) -> (B, C_out, H, W)``; a 1x1 conv skip when the width changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, norm_groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, norm_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, H, W)``; ``emb``: ``(B, emb_dim)``, already passed through SiLU."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        return self.skip(x) + self.conv2(self.dropout(h))


class Attention(nn.Module):
    """Multi-head self-attention over all pixels: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, head_channels: int, norm_groups: int):
        super().__init__()
        # Heads must divide the width: the largest divisor not above channels // head_channels.
        self.heads = _largest_divisor(channels, max(1, channels // head_channels))
        self.norm = _norm(channels, norm_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, 3C, H, W) -> 3 x (B, heads, HW, C / heads)
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Strided 3x3 conv: ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 conv: ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Noise-conditioned UNet ``(B, C_in, H, W), (B,) | (B, F) -> (B, C_out, H, W)``.

    Attention is placed by level index (level 0 = full resolution, each next level halves H and
    W), not by absolute resolution, so one network runs at any ``H, W`` divisible by
    :attr:`downsample_factor`. The output conv is zero-initialised: a fresh net outputs 0.

    Args:
        in_channels: image channels ``C_in``.
        out_channels: output channels ``C_out`` (default ``in_channels``).
        channels: base width; level ``i`` has width ``channels * channel_mult[i]``.
        channel_mult: width multiplier per resolution level.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attn_levels: level indices with self-attention (the middle block always has it).
        dropout: dropout rate inside residual blocks.
        head_channels: channels per attention head (heads = width // head_channels, >= 1).
        noise_features: ``F``, the number of noise-conditioning scalars per image.
        emb_mult: the noise embedding has ``emb_mult * channels`` features.
        norm_groups: maximum GroupNorm group count (the largest divisor of the width below it).
        num_classes: class labels ``0 .. K - 1`` embedded into the noise embedding (label ``K``
            or ``None``: the null label of classifier-free guidance); None: no labels.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_levels: Sequence[int] = (2,),
        dropout: float = 0.0,
        head_channels: int = 32,
        noise_features: int = 1,
        emb_mult: int = 4,
        norm_groups: int = 32,
        num_classes: int | None = None,
        coord_channels: int = 0,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        channel_mult, attn_levels = tuple(channel_mult), tuple(attn_levels)
        check_coord_channels(coord_channels)
        check_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            num_res_blocks=num_res_blocks,
            head_channels=head_channels,
            noise_features=noise_features,
            emb_mult=emb_mult,
            norm_groups=norm_groups,
        )
        _check_layout(channels, channel_mult, attn_levels, dropout)
        self.coord_channels = coord_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.noise_features = noise_features
        self.num_levels = len(channel_mult)

        emb_dim = emb_mult * channels
        self.register_buffer("freqs", noise_frequencies(channels // 2), persistent=False)
        self.emb_mlp = noise_mlp(noise_features * channels, emb_dim)
        self.num_classes = num_classes
        self.label_emb = None if num_classes is None else LabelEmbedding(num_classes, emb_dim)

        # Layers are created in the order of the forward pass (the order of the random
        # initialisation and of the state dict).
        res = functools.partial(ResBlock, emb_dim=emb_dim, dropout=dropout, norm_groups=norm_groups)
        attn = functools.partial(Attention, head_channels=head_channels, norm_groups=norm_groups)
        widths = [channels * mult for mult in channel_mult]
        self.conv_in = nn.Conv2d(in_channels + coord_channels, channels, 3, padding=1)
        self.down, skips = _encoder(channels, widths, num_res_blocks, attn_levels, res, attn)
        ch = widths[-1]
        self.mid = nn.ModuleList([res(ch, ch), attn(ch), res(ch, ch)])
        self.up = _decoder(widths, num_res_blocks, attn_levels, res, attn, skips)
        self.norm_out = _norm(widths[0], norm_groups)
        self.conv_out = zero_init(nn.Conv2d(widths[0], out_channels, 3, padding=1))

    @property
    def downsample_factor(self) -> int:
        """``H`` and ``W`` must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """Validate the inputs; return ``c_noise`` as ``(B, F)`` in ``x``'s dtype."""
        return check_inputs(
            x, c_noise, self.in_channels, self.noise_features, self.downsample_factor
        )

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise features ``(B, F)`` (and labels ``(B,)``) -> embedding ``(B, emb_mult *
        channels)``, after SiLU."""
        return embed_noise(c_noise, labels, self.freqs, self.emb_mlp, self.label_emb)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` ``(B, C_in, H, W)`` given ``c_noise`` ``(B,)`` | ``(B, F)`` and, for a
        class-conditional net, ``labels`` ``(B,)`` (None: the null label). With
        ``coord_channels = 2`` the coordinate channels ``coords`` ``(B, 2, H, W)`` are appended
        (None: the full grid of the input, :func:`~nudiff.models.layers.coordinate_channels`; a
        patch-trained model gets its crops' coordinates).

        Returns ``(B, C_out, H, W)``.
        """
        emb = self.embed(self._check(x, c_noise), labels)
        h = self.conv_in(with_coordinates(x, coords, self.coord_channels))
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(block, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    @torch.no_grad()
    def count_macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of one forward pass for a single ``height x width`` image.

        Counts convolutions, linear layers and the two attention matmuls (``QK^T`` and ``AV``,
        ``L^2 * C`` each for ``L`` pixels); normalisations, activations and softmax are ignored.
        """
        p = next(self.parameters())
        x = torch.zeros(1, self.in_channels, height, width, dtype=p.dtype, device=p.device)
        c_noise = torch.zeros(1, self.noise_features, dtype=p.dtype, device=p.device)
        # attention over L = H W pixels of width C: L^2 C for QK^T, as much for AV
        return count_forward_macs(
            self, lambda: self(x, c_noise), Attention, lambda s: 2 * (s[2] * s[3]) ** 2 * s[1]
        )


def _check_layout(
    channels: int, channel_mult: tuple[int, ...], attn_levels: tuple[int, ...], dropout: float
) -> None:
    """Validate the UNet's widths, attention levels and dropout (one-line ``ValueError``)."""
    if channels < 2 or channels % 2:
        raise ValueError(f"channels must be a positive even number, got {channels}")
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult must be non-empty positive ints, got {channel_mult}")
    if any(not 0 <= lvl < len(channel_mult) for lvl in attn_levels):
        raise ValueError(f"attn_levels must lie in [0, {len(channel_mult)}), got {attn_levels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _encoder(
    channels: int,
    widths: list[int],
    num_res_blocks: int,
    attn_levels: tuple[int, ...],
    res: Callable[[int, int], ResBlock],
    attn: Callable[[int], Attention],
) -> tuple[nn.ModuleList, list[int]]:
    """The encoder's blocks from ``conv_in``'s ``channels`` on: per level ``num_res_blocks``
    residual blocks to ``widths[level]`` (each followed by attention at ``attn_levels``), then
    a downsampling except at the last level. Also returns the width of every feature map passed
    to the decoder (``conv_in``'s first)."""
    down, skips, ch = nn.ModuleList(), [channels], channels
    for level, width in enumerate(widths):
        for _ in range(num_res_blocks):
            block = nn.ModuleList([res(ch, width)])
            ch = width
            if level in attn_levels:
                block.append(attn(ch))
            down.append(block)
            skips.append(ch)
        if level < len(widths) - 1:
            down.append(nn.ModuleList([Downsample(ch)]))
            skips.append(ch)
    return down, skips


def _decoder(
    widths: list[int],
    num_res_blocks: int,
    attn_levels: tuple[int, ...],
    res: Callable[[int, int], ResBlock],
    attn: Callable[[int], Attention],
    skips: list[int],
) -> nn.ModuleList:
    """The decoder's blocks, deepest level first: per level ``num_res_blocks + 1`` residual
    blocks, each reading the next encoder feature map (widths popped from ``skips``) besides
    its input, then an upsampling except at level 0."""
    up, ch = nn.ModuleList(), widths[-1]
    for level, width in reversed(list(enumerate(widths))):
        for _ in range(num_res_blocks + 1):
            block = nn.ModuleList([res(ch + skips.pop(), width)])
            ch = width
            if level in attn_levels:
                block.append(attn(ch))
            up.append(block)
        if level > 0:
            up.append(nn.ModuleList([Upsample(ch)]))
    return up
