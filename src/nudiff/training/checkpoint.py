"""Atomic, self-verifying checkpoints.

Layout of ``RUN/checkpoints/step_000123/``:

* ``model.safetensors``: the model's ``state_dict`` (parameters and persistent buffers);
* ``ema.safetensors``: the EMA model's ``state_dict``;
* ``state.pt``: optimiser, LR scheduler, grad scaler, step, epoch, position in the epoch, RNG
  states; plain tensors/ints/lists only, so it loads with ``torch.load(weights_only=True)``;
* ``config.yaml``: the resolved config;
* ``manifest.json``: byte size and SHA-256 of every other file, written last.

A checkpoint is written into a temporary folder beside the final one, fsynced, and renamed
with ``os.replace``: a folder named ``step_*`` is always complete. A checkpoint is valid when
its manifest exists and every file matches it; loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml

FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.yaml")
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"step_(\d+)")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupted or unsafe to load."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: state dicts on the CPU, the training state and the config."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    state: dict[str, Any]
    config: dict[str, Any]


# ------------------------------------------------------------------------------------ save
def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    state: dict[str, Any],
    config: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step_{step:06d}`` atomically and return its path.

    ``state`` must hold only what ``torch.load(weights_only=True)`` accepts (tensors, numbers,
    strings, lists, tuples, dicts). With ``keep``, afterwards delete all but the ``keep`` newest
    checkpoints, and any of a later step (left over from before a resume).
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for junk in root.glob(".tmp-*"):  # from a write that was killed
        shutil.rmtree(junk, ignore_errors=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        buf = io.BytesIO()
        torch.save(state, buf)
        blobs = {
            "model.safetensors": safetensors.torch.save(_for_safetensors(model)),
            "ema.safetensors": safetensors.torch.save(_for_safetensors(ema)),
            "state.pt": buf.getvalue(),
            "config.yaml": yaml.safe_dump(config or {}, sort_keys=False).encode(),
        }
        manifest = {"format": 1, "step": step, "files": {}}
        for name, data in blobs.items():
            _write(tmp / name, data)
            manifest["files"][name] = {
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        _write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(tmp)
        if final.exists():  # an invalid leftover of this step: swap it out, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".tmp-old-{final.name}-", dir=root))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        found = list_checkpoints(run_dir)
        older = [p for s, p in found if s < step]
        stale = [p for s, p in found if s > step]
        for p in stale + older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _for_safetensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses aliasing)."""
    out, seen = {}, set()
    for k, v in sd.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    return out


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # directory entries are durable only once the folder is synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------ load
def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_*`` folder, oldest first, valid or not."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))
    ]
    return sorted(found)


def verify_checkpoint(path: str | os.PathLike) -> dict[str, bytes]:
    """Check ``path`` against its manifest; return the verified contents of every file.

    Raises :class:`CheckpointError` for a missing or unreadable manifest, a missing file, or a
    size or SHA-256 mismatch.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
        entries = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete write?)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST}: {e}") from None
    if sorted(entries) != sorted(FILES):
        raise CheckpointError(f"{path}: {MANIFEST} lists {sorted(entries)}, expected {list(FILES)}")
    blobs = {}
    for name in FILES:
        try:
            data = (path / name).read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: {name} is missing") from None
        if len(data) != entries[name]["bytes"]:
            raise CheckpointError(
                f"{path}: {name} has {len(data)} bytes, manifest says "
                f"{entries[name]['bytes']} (truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != entries[name]["sha256"]:
            raise CheckpointError(f"{path}: {name} does not match its SHA-256 in {MANIFEST}")
        blobs[name] = data
    return blobs


def latest_valid_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies, warning about each newer one that
    does not; ``None`` if there is none."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            warnings.warn(f"skipping invalid checkpoint: {e}", stacklevel=2)
    return None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Verify and load one checkpoint folder (tensors on the CPU)."""
    path = Path(path)
    blobs = verify_checkpoint(path)
    try:
        state = torch.load(io.BytesIO(blobs["state.pt"]), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary objects instead of running them
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}/state.pt: refused to load: {msg}") from e
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        model=safetensors.torch.load(blobs["model.safetensors"]),
        ema=safetensors.torch.load(blobs["ema.safetensors"]),
        state=state,
        config=yaml.safe_load(blobs["config.yaml"]) or {},
    )


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints`` folder or a run folder
    (the newest valid one)."""
    path = Path(path)
    if (path / MANIFEST).exists() or _STEP_DIR.fullmatch(path.name):
        return path
    run_dir = path.parent if path.name == "checkpoints" else path
    found = latest_valid_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no valid checkpoint under {path}")
    return found


def load_weights(path: str | os.PathLike, ema: bool = True) -> dict[str, torch.Tensor]:
    """The model's (``ema=False``) or EMA model's ``state_dict`` from a checkpoint, a
    ``checkpoints`` folder or a run folder (its newest valid checkpoint), verified."""
    blobs = verify_checkpoint(resolve_checkpoint(path))
    return safetensors.torch.load(blobs["ema.safetensors" if ema else "model.safetensors"])
