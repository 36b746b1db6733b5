"""Shared helpers: timing, environment description, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_timings(fns: dict, rounds: int, reps: int, device="cpu") -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternating blocks of ``reps`` calls so
    that drifts of the machine's speed hit every function alike."""
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            began = time.perf_counter()
            for _ in range(reps):
                fn()
            sync(device)
            out[name].append((time.perf_counter() - began) / reps)
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def write_json(result: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


def train_or_reuse(cfg, run_dir: Path) -> dict:
    """Train ``cfg`` into ``run_dir``, or reuse a finished run of an earlier call (its
    ``train_summary.json``): steps, images/s, final loss, why it stopped."""
    from nudiff.run import train

    summary = run_dir / "train_summary.json"
    if summary.is_file():
        print(f"   reusing {run_dir}; delete it to retrain", flush=True)
        return json.loads(summary.read_text())
    out = train(cfg, run_dir, resume=False)
    kept = {k: out[k] for k in ("steps", "images_per_s", "final_loss", "stopped")}
    summary.write_text(json.dumps(kept))
    return kept
