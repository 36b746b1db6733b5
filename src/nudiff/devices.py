"""One device rule for the command line and the Python API."""

from __future__ import annotations

import os
import re


def resolve_device(name=None):
    """``torch.device`` for ``name``: ``auto`` or None picks CUDA, then Apple's MPS, then the
    CPU; ``cuda`` is this process's GPU (``cuda:LOCAL_RANK`` under ``torchrun``); a device
    that this machine lacks is a one-line ``ValueError``."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ValueError("device mps: this machine has no Apple MPS device (use auto or cpu)")
        return torch.device("mps")
    if name == "cuda" or re.fullmatch(r"cuda:\d+", name):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: no CUDA GPU is available (use auto or cpu)")
        if name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
