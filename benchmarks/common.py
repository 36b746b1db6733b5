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


def budget_config(path, minutes: float, data: str | None = None, sets=(), extra=()):
    """``path`` loaded for a wall-clock budget: ``minutes`` of training (no step limit), no
    sample grids or TensorBoard during training, ``data.path`` replaced by ``data`` if given;
    ``extra`` overrides come before the user's ``sets``."""
    from nudiff.config import load_config

    overrides = [
        *extra,
        f"train.max_minutes={minutes}",
        "train.steps=10000000",
        "train.sample_every=0",
        "train.tensorboard=false",
        *([f"data.path={data}"] if data else []),
        *sets,
    ]
    return load_config(path, overrides)


def train_or_reuse(cfg, run_dir: Path) -> dict:
    """Train ``cfg`` into ``run_dir``, or reuse a finished run of an earlier call with the same
    config (its ``train_summary.json``): steps, images/s, seconds, final loss, why it stopped."""
    from nudiff.config import dump_config
    from nudiff.run import train

    summary, text = run_dir / "train_summary.json", dump_config(cfg)
    if summary.is_file():
        kept = json.loads(summary.read_text())
        if kept.get("config") != text:
            raise ValueError(
                f"{run_dir} holds a run trained with another config; delete it or choose "
                "another --out"
            )
        print(f"   reusing {run_dir}; delete it to retrain", flush=True)
        return kept
    began = time.perf_counter()
    out = train(cfg, run_dir, resume=False)
    kept = {k: out[k] for k in ("steps", "images_per_s", "final_loss", "stopped")}
    kept.update(seconds=time.perf_counter() - began, config=text)
    summary.write_text(json.dumps(kept))
    return kept


def feature_net(cfg, path: Path, given=None, steps: int = 1500, seed: int = 0) -> tuple[Path, dict]:
    """The feature network of the Frechet distances: ``given``, cached at ``path``, or trained
    there on the images of ``cfg``'s data that the config does not hold out."""
    from nudiff.eval.features import load_images_npz, save_feature_net, train_feature_net

    if given:
        return Path(given), {"features": str(given)}
    if path.is_file():
        return path, {"features": str(path), "cached": True}
    images, labels = load_images_npz(cfg.data.path)
    if labels is None:
        raise ValueError(f"{cfg.data.path} has no labels (y_train) to train a feature network")
    keep = len(images) - cfg.data.holdout  # never train on the held-out reference images
    began = time.perf_counter()
    net, info = train_feature_net(images[:keep], labels[:keep], steps=steps, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_feature_net(net, path, info)
    return path, {**info, "features": str(path), "seconds": time.perf_counter() - began}


def reference_features(net, images) -> torch.Tensor:
    """Features of uint8 images (numpy ``(N, H, W[, C])`` or tensor ``(N, C, H, W)``) fitted to
    the feature network's input shape."""
    from nudiff.eval.commands import fit_images
    from nudiff.eval.features import extract_features

    shape = (net.in_channels, net.resolution, net.resolution)
    return extract_features(net, fit_images(images, shape))


def check_holdout(cfg, n: int) -> None:
    """Raise (before any training) unless ``cfg`` holds out at least ``n`` reference images."""
    if cfg.data.holdout < n:
        raise ValueError(f"{n} samples exceed the {cfg.data.holdout} held-out images")


def held_out_reference(cfg, net, n: int) -> tuple:
    """Features of the last ``n`` held-out images of ``cfg``'s ``.npz`` (the images its
    ``data.holdout`` keeps out of training) and the floor of a Frechet distance at ``n``: the FD
    of ``n`` other held-out images against them (None when fewer than ``2 n`` are held out)."""
    from nudiff.eval.features import load_images_npz

    check_holdout(cfg, n)
    images, _ = load_images_npz(cfg.data.path)
    held_out = images[len(images) - cfg.data.holdout :]
    f_ref = reference_features(net, held_out[-n:])
    floor = None
    if len(held_out) >= 2 * n:
        floor = score_features(reference_features(net, held_out[:n]), f_ref)["fd"]
    return f_ref, floor


def score_features(f_gen, f_ref, seed: int = 0) -> dict:
    """Frechet distance (with its bootstrap standard error) and KID (mean and std over 100
    subsets of half the samples, at most 1,000) between generated and reference features."""
    from nudiff.eval import frechet_distance, frechet_standard_error, gaussian_stats, kid

    fd = frechet_distance(*gaussian_stats(f_gen), *gaussian_stats(f_ref))
    kid_mean, kid_std = kid(f_gen, f_ref, subsets=100, seed=seed)
    return {
        "fd": fd,
        "fd_se": frechet_standard_error(f_gen, f_ref, seed=seed),
        "kid": kid_mean,
        "kid_std": kid_std,
    }


def sample_and_score(run, n: int, net, f_ref, seed: int = 0, grid_png=None) -> dict:
    """Sample ``n`` images from a run (or checkpoint) with its config's sampler and score them
    against the reference features: FD, its standard error, KID, NFE, ms per sample. Writes
    the first 64 as a grid to ``grid_png`` if given."""
    from nudiff.run import sample_run

    return score_samples(sample_run(run, n=n, seed=seed, progress=True), net, f_ref, seed, grid_png)


def score_samples(samples, net, f_ref, seed: int = 0, grid_png=None) -> dict:
    """:func:`sample_and_score` for a :class:`~nudiff.samplers.SampleResult` already drawn."""
    from nudiff.data import save_image_grid
    from nudiff.data.transforms import float_to_uint8

    n = len(samples.images)
    images = samples.images.clamp(-1, 1)
    if grid_png is not None:
        save_image_grid(images[:64], grid_png, min_size=64)
    gen = float_to_uint8(images).cpu()
    return {
        **score_features(reference_features(net, gen), f_ref, seed),
        "n": n,
        "nfe": samples.nfe,
        "ms_per_sample": 1e3 * samples.seconds / n,
    }
