"""Pieces the backbones share (UNet, DiT, LEGO, MLP): input checks, coordinate channels, zero
initialisation, the noise embedding and the multiply-accumulate counter."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nudiff.models.labels import LabelEmbedding, label_term

__all__ = [
    "check_coord_channels",
    "check_inputs",
    "check_positive",
    "coordinate_channels",
    "count_forward_macs",
    "embed_noise",
    "fourier_features",
    "noise_frequencies",
    "noise_mlp",
    "with_coordinates",
    "zero_init",
]


def check_positive(**values: int) -> None:
    """Raise ``ValueError`` for the first of ``name=value`` that is below 1."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def check_coord_channels(coord_channels: int) -> None:
    """Raise ``ValueError`` unless ``coord_channels`` is 0 or 2 (row and column)."""
    if coord_channels not in (0, 2):
        raise ValueError(f"coord_channels must be 0 or 2, got {coord_channels}")


def check_inputs(
    x: torch.Tensor, c_noise: torch.Tensor, channels: int, noise_features: int, multiple: int
) -> torch.Tensor:
    """Validate a backbone's inputs: ``x`` ``(B, channels, H, W)`` with ``H, W`` multiples of
    ``multiple``, ``c_noise`` ``(B, noise_features)`` (or ``(B,)`` for one feature); return
    ``c_noise`` as ``(B, F)`` in ``x``'s dtype."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a rank-4 tensor (B, C, H, W), got {shape}")
    if x.shape[1] != channels:
        raise ValueError(f"x must have {channels} channels, got {x.shape[1]}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(
            f"x height and width must be divisible by downsample_factor={multiple}, "
            f"got {tuple(x.shape[2:])}"
        )
    c_noise = torch.as_tensor(c_noise, device=x.device)
    want = [(x.shape[0], noise_features)]
    if noise_features == 1:
        want.append((x.shape[0],))
    if tuple(c_noise.shape) not in want:
        raise ValueError(
            f"c_noise must have shape {' or '.join(map(str, want))}, got {tuple(c_noise.shape)}"
        )
    return c_noise.reshape(x.shape[0], noise_features).to(x.dtype)


def coordinate_channels(
    batch: int,
    height: int,
    width: int,
    *,
    canvas: tuple[int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Pixel-centre coordinates in ``[-1, 1]``: ``(batch, 2, height, width)``, row then column.

    The ``height x width`` window sits at ``offset = (top, left)`` on a ``canvas = (H_c, W_c)``
    (default: the window itself); pixel ``(i, j)`` gets ``((2 (top + i) + 1) / H_c - 1,
    (2 (left + j) + 1) / W_c - 1)``. The coordinates span the canvas being generated, whatever
    the training size: a model trained at 32x32 and sampled at 64x64 sees ``[-1, 1]`` over the
    64x64 canvas, so a region's coordinates still say where on the canvas it lies.
    """
    canvas = (height, width) if canvas is None else tuple(canvas)
    top, left = offset
    if height < 1 or width < 1 or batch < 1:
        raise ValueError(f"batch, height and width must be >= 1, got {batch}, {height}, {width}")
    if top < 0 or left < 0 or top + height > canvas[0] or left + width > canvas[1]:
        raise ValueError(
            f"a {height}x{width} window at offset {offset} does not fit a canvas of {canvas}"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype

    def axis(start: int, n: int, size: int) -> torch.Tensor:
        return (2 * torch.arange(start, start + n, device=device, dtype=dtype) + 1) / size - 1

    rows = axis(top, height, canvas[0])[:, None].expand(height, width)
    cols = axis(left, width, canvas[1])[None, :].expand(height, width)
    return torch.stack([rows, cols])[None].expand(batch, 2, height, width)


def with_coordinates(
    x: torch.Tensor, coords: torch.Tensor | None, coord_channels: int
) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with ``coord_channels`` (0 or 2) coordinate channels appended:
    ``coords`` ``(B, 2, H, W)``, or the full grid of ``x`` when None (see
    :func:`coordinate_channels`). Returns ``(B, C + coord_channels, H, W)``."""
    if not coord_channels:
        if coords is not None:
            raise ValueError("coords given to a backbone without coordinate channels")
        return x
    b, _, h, w = x.shape
    if coords is None:
        coords = coordinate_channels(b, h, w, device=x.device, dtype=x.dtype)
    elif tuple(coords.shape) != (b, 2, h, w):
        raise ValueError(f"coords must have shape {(b, 2, h, w)}, got {tuple(coords.shape)}")
    return torch.cat([x, coords.to(x)], dim=1)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer: residual branches start as the identity and the net outputs 0."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def noise_frequencies(n: int) -> torch.Tensor:
    """``(n,)`` geometric frequencies from 0.1 to 100 rad per unit: ``c_noise`` (e.g. log-SNR /
    4) spans a few units, so the slowest features are near-linear and the fastest have period
    ~0.06."""
    return torch.exp(torch.linspace(math.log(0.1), math.log(100.0), n))


def fourier_features(c_noise: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``c_noise`` ``(B, F)``, ``freqs`` ``(n,)`` -> ``(B, F * 2n)``: per feature the cosines,
    then the sines."""
    angles = c_noise[:, :, None] * freqs.to(c_noise.dtype)  # (B, F, n)
    return torch.cat([angles.cos(), angles.sin()], dim=-1).flatten(1)


def noise_mlp(in_features: int, emb_dim: int) -> nn.Sequential:
    """The MLP from Fourier features ``(B, in_features)`` to the embedding ``(B, emb_dim)``."""
    return nn.Sequential(nn.Linear(in_features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))


def embed_noise(
    c_noise: torch.Tensor,
    labels: torch.Tensor | None,
    freqs: torch.Tensor,
    mlp: nn.Module,
    label_emb: LabelEmbedding | None,
) -> torch.Tensor:
    """Noise features ``(B, F)`` (and labels ``(B,)``) -> embedding ``(B, emb_dim)``, after
    SiLU: every layer that reads it (residual block, adaLN modulation) applies SiLU before its
    projection, so it is done once here."""
    emb = mlp(fourier_features(c_noise, freqs)) + label_term(label_emb, labels, c_noise.shape[0])
    return F.silu(emb)


def count_forward_macs(
    model: nn.Module,
    forward: Callable[[], object],
    attention: type[nn.Module],
    attention_macs: Callable[[torch.Size], int],
) -> int:
    """Multiply-accumulates of ``forward()``, a pass of ``model``: convolutions and linear layers,
    plus ``attention_macs(input shape)`` for each call of an ``attention`` module (its ``QK^T``
    and ``AV`` matmuls); normalisations, activations and softmax are ignored."""
    macs = 0

    def conv_hook(m: nn.Conv2d, inputs, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m: nn.Linear, inputs, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    def attn_hook(m: nn.Module, inputs, out: torch.Tensor) -> None:
        nonlocal macs
        macs += attention_macs(inputs[0].shape)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, attention):
            hooks.append(m.register_forward_hook(attn_hook))
    try:
        forward()
    finally:
        for hook in hooks:
            hook.remove()
    return int(macs)
