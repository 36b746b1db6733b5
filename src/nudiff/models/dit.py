"""A resolution-agnostic Diffusion Transformer (DiT) backbone with adaLN-Zero conditioning.

After Peebles & Xie, "Scalable Diffusion Models with Transformers": patchify, pre-LN transformer
blocks modulated by the noise embedding, a linear decoder back to patches. Positions are fixed
2-D sin-cos features computed for the actual token grid (no learned table), so one network runs
at any ``H, W`` divisible by the patch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nudiff.models.labels import LabelEmbedding
from nudiff.models.layers import (
    check_coord_channels,
    check_inputs,
    check_positive,
    coordinate_channels,
    count_forward_macs,
    embed_noise,
    noise_frequencies,
    noise_mlp,
    with_coordinates,
    zero_init,
)

__all__ = ["DiT", "DiTBlock", "coordinate_channels", "sincos_pos_embed_2d"]


def sincos_pos_embed_2d(
    dim: int,
    grid_h: int,
    grid_w: int,
    *,
    extent_h: float | None = None,
    extent_w: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding of a ``grid_h x grid_w`` token grid: ``(grid_h * grid_w, dim)``.

    Rows are in row-major token order (``flatten`` of a ``(..., grid_h, grid_w)`` map). Token
    ``(i, j)`` sits at position ``(i * extent_h / grid_h, j * extent_w / grid_w)``. The default
    extents are the grid itself: position ``(i, j)`` in token units, so a larger grid extends a
    smaller one (its top-left tokens keep their embeddings). A smaller extent interpolates
    instead (``extent_h = grid_h / 2`` puts rows half a unit apart).

    The first ``dim / 2`` features encode the row, the rest the column, each as the ``sin`` then
    the ``cos`` of ``dim / 4`` geometric frequencies from 1 down to 1/10000 rad per unit.
    """
    if dim < 4 or dim % 4:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim}")
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"the grid must be at least 1 x 1, got {grid_h} x {grid_w}")
    extent_h = grid_h if extent_h is None else extent_h
    extent_w = grid_w if extent_w is None else extent_w
    if extent_h <= 0 or extent_w <= 0:
        raise ValueError(f"extents must be positive, got {extent_h} x {extent_w}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    # float32 at least: half-precision angles of tens of radians would lose the fine frequencies.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    quarter = dim // 4
    omega = 10000.0 ** -(torch.arange(quarter, device=device, dtype=work) / quarter)

    def axis(n: int, extent: float) -> torch.Tensor:  # (n, dim / 2)
        angles = (torch.arange(n, device=device, dtype=work) * (extent / n))[:, None] * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = axis(grid_h, extent_h), axis(grid_w, extent_w)
    emb = torch.cat(
        [rows[:, None].expand(-1, grid_w, -1), cols[None].expand(grid_h, -1, -1)], dim=-1
    )
    return emb.reshape(grid_h * grid_w, dim).to(dtype)


def _per_input(params: torch.Tensor, n: int) -> torch.Tensor:
    """Per-image ``(B, K)`` -> ``(N, 1, K)``: ``N = B * R`` inputs, ``R`` consecutive per image."""
    return params.repeat_interleave(n // params.shape[0], dim=0)[:, None]


class DiTBlock(nn.Module):
    """Pre-LN transformer block with adaLN-Zero conditioning: ``(N, L, D), (B, D) -> (N, L, D)``.

    Each run of ``N / B`` consecutive sequences (the regions of one image) shares one
    conditioning row. The modulation is zero-initialised: every gate starts at 0, so the block
    starts as the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"heads must divide width={width}, got {heads}")
        hidden = int(width * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
        self.heads = heads
        # LayerNorm without affine: the modulation supplies the scale and shift.
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        self.modulation = zero_init(nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, L, D)`` tokens; ``emb``: ``(B, D)`` embedding after SiLU, ``B | N``."""
        n, length, d = x.shape
        mod = _per_input(self.modulation(emb), n)  # (N, 1, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        h = torch.addcmul(shift1, self.norm1(x), 1 + scale1)
        # (N, L, 3D) -> 3 x (N, heads, L, D / heads)
        q, k, v = self.qkv(h).reshape(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, d)
        x = x + gate1 * self.proj(att)
        return x + gate2 * self.mlp(torch.addcmul(shift2, self.norm2(x), 1 + scale2))


class DiT(nn.Module):
    """Noise-conditioned DiT ``(B, C_in, H, W), (B,) | (B, F) -> (B, C_out, H, W)``.

    ``Conv2d(kernel = stride = patch)`` patch embedding, fixed sin-cos positions for the input's
    own token grid (:func:`sincos_pos_embed_2d`, token ``(i, j)`` at position ``(i, j)``: an
    input larger than the training size extends the grid), ``depth`` adaLN-Zero blocks, a final
    adaLN and a linear decoder to ``patch x patch x C_out`` pixels per token. The decoder is
    zero-initialised: a fresh net outputs exactly 0.

    The noise conditioning is embedded as in :class:`~nudiff.models.unet.UNet`: Fourier
    features of each of the ``F`` scalars, then an MLP, to a ``width``-dimensional embedding.

    Args:
        in_channels: image channels ``C_in``.
        out_channels: output channels ``C_out`` (default ``in_channels``).
        patch_size: side of the square patch one token covers; ``H, W`` must be multiples of it.
        width: token width ``D`` (a multiple of 4 and of ``heads``).
        depth: number of transformer blocks.
        heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``D``.
        noise_features: ``F``, the number of noise-conditioning scalars per image.
        coord_channels: 0, or 2 to append :func:`coordinate_channels` (row, column in
            ``[-1, 1]`` over the input) to the image: positions relative to the canvas, which
            the extended sin-cos grid alone does not give at a new resolution.
        num_classes: class labels embedded into the noise embedding (None: no labels; label
            ``num_classes`` or ``labels=None``: the null label of classifier-free guidance).
        stem_channels: 0, or the channels of a 3x3 convolution (and GELU) run on the image
            before patchifying: per-pixel local features, which a linear patch embedding of
            large patches lacks.
        conv_head: a 3x3 convolution on the decoded image (as U-ViT's final layer), which lets
            neighbouring patches agree at their seams.
        skips: U-ViT's long skip connections: the last ``depth // 2`` blocks each take the
            output of their mirror image among the first ones, concatenated and projected back
            to ``width``, so shallow features reach the decoder.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        patch_size: int = 2,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        noise_features: int = 1,
        coord_channels: int = 0,
        num_classes: int | None = None,
        stem_channels: int = 0,
        conv_head: bool = False,
        skips: bool = False,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if stem_channels < 0:
            raise ValueError(f"stem_channels must be >= 0, got {stem_channels}")
        check_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            patch_size=patch_size,
            depth=depth,
            noise_features=noise_features,
        )
        if width < 4 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        check_coord_channels(coord_channels)

        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_size, self.width, self.depth = patch_size, width, depth
        self.noise_features, self.coord_channels = noise_features, coord_channels

        # the UNet's noise embedding, to the token width
        self.register_buffer("freqs", noise_frequencies(width // 2), persistent=False)
        self.emb_mlp = noise_mlp(noise_features * width, width)
        self.num_classes = num_classes
        self.label_emb = None if num_classes is None else LabelEmbedding(num_classes, width)
        channels = in_channels + coord_channels
        self.stem = None
        if stem_channels:
            self.stem = nn.Sequential(
                nn.Conv2d(channels, stem_channels, 3, padding=1), nn.GELU(approximate="tanh")
            )
            channels = stem_channels
        self.patch_embed = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio) for _ in range(depth))
        pairs = depth // 2 if skips else 0
        self.skip_proj = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(pairs))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = zero_init(nn.Linear(width, 2 * width))
        self.linear_out = zero_init(nn.Linear(width, patch_size * patch_size * out_channels))
        self.head = None
        if conv_head:  # bias-free and not zero: the zero decoder before it keeps a fresh net at 0
            self.head = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)

    @property
    def downsample_factor(self) -> int:
        """``H`` and ``W`` must be multiples of this (the patch size)."""
        return self.patch_size

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise features ``(B, F)`` (and labels ``(B,)``) -> embedding ``(B, width)``, after
        SiLU."""
        return embed_noise(c_noise, labels, self.freqs, self.emb_mlp, self.label_emb)

    def denoise(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The network after embedding: ``(N, C_in + coord_channels, H, W), (B, width)`` ->
        ``(N, C_out, H, W)``.

        ``N = B * R``: each run of ``R`` consecutive inputs (e.g. the regions of one image) is
        conditioned on one row of ``emb`` from :meth:`embed`, so per-image work (embedding and
        modulation linears) is done once per image, not once per input.
        """
        n, _, h, w = x.shape
        p = self.patch_size
        if n % emb.shape[0] or h % p or w % p:
            raise ValueError(
                f"need N divisible by B and H, W by patch_size={p}; got N={n}, B={emb.shape[0]}, "
                f"H x W = {h} x {w}"
            )
        gh, gw = h // p, w // p
        if self.stem is not None:
            x = self.stem(x)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, L, D), row-major
        tokens = tokens + sincos_pos_embed_2d(
            self.width, gh, gw, device=x.device, dtype=tokens.dtype
        )
        pairs, saved = len(self.skip_proj), []
        for i, block in enumerate(self.blocks):
            if i >= self.depth - pairs:  # an out block: its mirror in-block's tokens join
                proj = self.skip_proj[i - (self.depth - pairs)]
                tokens = proj(torch.cat([tokens, saved.pop()], dim=-1))
            tokens = block(tokens, emb)
            if i < pairs:
                saved.append(tokens)
        shift, scale = _per_input(self.modulation_out(emb), n).chunk(2, dim=-1)
        out = self.linear_out(torch.addcmul(shift, self.norm_out(tokens), 1 + scale))
        # (N, gh, gw, p, p, C_out) -> (N, C_out, gh, p, gw, p): every token's patch in place
        out = out.reshape(n, gh, gw, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(n, self.out_channels, h, w)
        return out if self.head is None else self.head(out)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` ``(B, C_in, H, W)`` given ``c_noise`` ``(B,)`` | ``(B, F)`` and, for a
        class-conditional net, ``labels`` ``(B,)`` (None: the null label). ``coords``
        ``(B, 2, H, W)``: the coordinate channels (``coord_channels = 2``; None: the full grid
        of the input).

        Returns ``(B, C_out, H, W)``.
        """
        c_noise = check_inputs(
            x, c_noise, self.in_channels, self.noise_features, self.downsample_factor
        )
        x = with_coordinates(x, coords, self.coord_channels)
        return self.denoise(x, self.embed(c_noise, labels))

    @torch.no_grad()
    def count_macs(self, height: int, width: int, regions: int = 1) -> int:
        """Multiply-accumulates of one forward pass for a single ``height x width`` image.

        Counts convolutions, linear layers and the two attention matmuls (``QK^T`` and ``AV``,
        ``L^2 * width`` each for ``L`` tokens); normalisations, activations and softmax are
        ignored (as ``UNet.count_macs``). With ``regions = R``: one image made of ``R``
        ``height x width`` regions that share its conditioning, as :meth:`denoise` runs them
        (the embedding MLP and modulation linears once, everything else ``R`` times).
        """
        p = self.patch_size
        if height < 1 or width < 1 or height % p or width % p or regions < 1:
            raise ValueError(
                f"need positive height, width divisible by patch_size={p} and regions >= 1, "
                f"got {height}, {width}, {regions}"
            )
        q = next(self.parameters())
        channels = self.in_channels + self.coord_channels
        x = torch.zeros(regions, channels, height, width, dtype=q.dtype, device=q.device)
        c_noise = torch.zeros(1, self.noise_features, dtype=q.dtype, device=q.device)
        # attention over L tokens of width D in each of N sequences: N L^2 D for QK^T and AV each
        return count_forward_macs(
            self,
            lambda: self.denoise(x, self.embed(c_noise)),
            DiTBlock,
            lambda s: 2 * s[0] * s[1] ** 2 * s[2],
        )
