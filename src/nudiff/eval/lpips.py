"""LPIPS (Zhang et al., 2018): a perceptual distance between images, from local weights only.

``d(x, x') = sum_l mean_hw || w_l * (f_l(x) / |f_l(x)| - f_l(x') / |f_l(x')|) ||^2`` where
``f_l`` are AlexNet's five ReLU feature maps, normalised to unit length along the channels, and
``w_l >= 0`` the learned per-channel weights of LPIPS v0.1.

nudiff never downloads: the weights are read from files named by ``weights=`` or the
``NUDIFF_LPIPS_WEIGHTS`` environment variable (paths joined by ``os.pathsep``). Accepted:
torchvision's AlexNet state dict (``features.N.*``, e.g. ``alexnet-owt-7be5be79.pth``) with the
``lpips`` package's linear layers (``lin{l}.model.1.weight``, e.g. ``lpips/weights/v0.1/alex.pth``),
or one state dict of a whole ``lpips.LPIPS(net="alex")`` model (``net.slice{k}.N.*``, ``lin*``)
or of an :class:`LPIPS` here, as ``.pth`` (read with ``weights_only=True``) or ``.safetensors``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

LPIPS_ENV = "NUDIFF_LPIPS_WEIGHTS"
# AlexNet's convolutions: (index in torchvision's ``features``, in, out, kernel, stride, padding)
_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
          (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))  # fmt: skip
# LPIPS' input scaling: (x - shift) / scale, x in [-1, 1]
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_MISSING = (
    f"LPIPS needs its weights on this machine (nudiff never downloads): set {LPIPS_ENV} to "
    "torchvision's AlexNet file and the lpips package's v0.1 alex.pth, joined by "
    f"{os.pathsep!r} (or one state dict of a whole lpips.LPIPS(net='alex') model)"
)


class LPIPS(nn.Module):
    """LPIPS-Alex distance ``(B,)`` between images ``(B, C, H, W)`` in ``[-1, 1]`` (``C`` = 1 is
    repeated to RGB; images under 32 pixels are first upsampled bilinearly by an integer factor
    to at least 32, which AlexNet needs). Build it with :func:`load_lpips`."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for _, i, o, k, s, p in _CONVS)
        self.lins = nn.ParameterList(
            nn.Parameter(torch.zeros(1, o, 1, 1)) for *_, o, _, _, _ in _CONVS
        )
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU maps of AlexNet, each normalised to unit length along the channels."""
        h, out = (x - self.shift) / self.scale, []
        for j, conv in enumerate(self.convs):
            if j in (1, 2):  # max-pooling before the second and third convolutions
                h = F.max_pool2d(h, 3, 2)
            h = F.relu(conv(h))
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        if x.shape != x_ref.shape or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"LPIPS compares two batches of (B, 1 or 3, H, W) images of one shape; got "
                f"{tuple(x.shape)} and {tuple(x_ref.shape)}"
            )
        small = min(x.shape[-2:])
        if small < 32:  # AlexNet's stride-4 stem and two poolings need 31 pixels: upsample
            size = [n * math.ceil(32 / small) for n in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x_ref = F.interpolate(x_ref, size=size, mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x, x_ref = x.expand(-1, 3, -1, -1), x_ref.expand(-1, 3, -1, -1)
        dtype = self.shift.dtype
        pairs = zip(
            self.features(x.to(dtype)), self.features(x_ref.to(dtype)), self.lins, strict=True
        )
        return sum(((a - b).pow(2) * w).sum(1).mean((-2, -1)) for a, b, w in pairs)


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights file not found: {path}. {_MISSING}")
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable weights file ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _rename(key: str) -> str | None:
    """Our parameter name for a torchvision / lpips key (None: a key LPIPS does not use)."""
    if re.fullmatch(r"convs\.\d\.(weight|bias)|lins\.\d", key):  # an LPIPS of ours
        return key
    index = {c[0]: j for j, c in enumerate(_CONVS)}
    m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
    if m and int(m[1]) in index:
        return f"convs.{index[int(m[1])]}.{m[2]}"
    m = re.fullmatch(r"lin(\d)(?:\.model\.1)?\.weight", key)
    if m and int(m[1]) < len(_CONVS):
        return f"lins.{m[1]}"
    return None


def load_lpips(weights: str | os.PathLike | list | None = None, device="cpu") -> LPIPS:
    """An :class:`LPIPS` with weights from ``weights`` (a path, a list of paths, or paths joined
    by ``os.pathsep``) or from ``$NUDIFF_LPIPS_WEIGHTS``. Raises ``FileNotFoundError`` with
    what to set when there are none, ``ValueError`` when they are incomplete."""
    spec = weights if weights is not None else os.environ.get(LPIPS_ENV)
    if not spec:
        raise FileNotFoundError(_MISSING)
    paths = spec if isinstance(spec, list | tuple) else str(spec).split(os.pathsep)
    model, state = LPIPS(), {}
    for path in paths:
        for key, value in _read(Path(path)).items():
            name = _rename(key)
            if name is not None:
                state[name] = value
    expected = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"LPIPS weights incomplete: missing {', '.join(missing)}. {_MISSING}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"LPIPS weights have the wrong shapes: {e}") from None
    return model.to(device).eval()


def lpips_or_none(weights=None, device="cpu") -> tuple[LPIPS | None, str | None]:
    """``(model, None)``, or ``(None, why)`` when no weights are configured, so callers can
    report LPIPS only where it can be computed."""
    try:
        return load_lpips(weights, device), None
    except FileNotFoundError as e:
        return None, str(e)
