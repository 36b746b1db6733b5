"""Shared helpers of the benchmarks: timing, environment description, training, scoring, JSON
output. Nothing here imports torch at import time (``nudiff --help`` builds every parser)."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from nudiff.cli.vocabulary import add, deprecated

FEATURES_HELP = (
    "'inception' (FID: Inception-v3 with --inception-weights) or a feature network file from "
    "'nudiff features train' (default: train one on the data's images that the config does not "
    "hold out, cached in --out)"
)
CLASSIFIER_HELP = (
    "a feature network file from 'nudiff features train', which also classifies (default: "
    "train one on the data's images that the config does not hold out, cached in --out)"
)


def add_feature_options(p, features: bool = True, inception: bool = True) -> None:
    """``--features`` (unless not ``features``; ``inception``: Inception-v3 allowed, with
    ``--inception-weights``) and ``--feature-train-steps`` of a benchmark that scores by
    Frechet distances, with the old ``--feature-steps``."""
    if features and inception:
        add(p, "--features", FEATURES_HELP)
        add(p, "--inception-weights")
    elif features:  # the benchmark needs the classifier's labels too
        add(p, "--features", CLASSIFIER_HELP, metavar="FILE")
    add(p, "--feature-train-steps", default=1500)
    deprecated(p, "--feature-steps", "--feature-train-steps")


def environment(device=None) -> dict:
    """Versions, threads and the device the benchmark ran on (``device``: a device name or
    ``torch.device``; None: the GPU's name when there is one, else ``cpu``)."""
    import torch

    if device is None:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    else:
        device = torch.device(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": name,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def sync(device) -> None:
    """Wait for the device's queued work (CUDA, MPS) so that a timer sees it done."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


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


def numbers(values, kind, flag: str) -> list:
    """``values`` (a list from a comma-separated option, or such a string) as ``kind`` (int or
    float), or a one-line ``ValueError`` that names ``flag``."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"{flag} takes {kind.__name__} values separated by commas, got "
            f"{','.join(map(str, values))!r}"
        ) from None


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
        *(sets or ()),
    ]
    return load_config(path, overrides)


def train_or_reuse(cfg, run_dir: Path, device=None) -> dict:
    """Train ``cfg`` into ``run_dir`` on ``device``, or reuse a finished run of an earlier call
    with the same config (its ``train_summary.json``): steps, images/s, seconds, final loss, why
    it stopped."""
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
    out = train(cfg, run_dir, resume=False, device=device)
    kept = {k: out[k] for k in ("steps", "images_per_s", "final_loss", "stopped")}
    kept.update(seconds=time.perf_counter() - began, config=text)
    summary.write_text(json.dumps(kept))
    return kept


def feature_net(
    cfg, path: Path, given=None, steps: int = 1500, seed: int = 0, device="cpu"
) -> tuple[Path, dict]:
    """The feature network of the Frechet distances: ``given``, cached at ``path``, or trained
    there (on ``device``) on the images of ``cfg``'s data that the config does not hold out."""
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
    net, info = train_feature_net(
        images[:keep], labels[:keep], steps=steps, seed=seed, device=device
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_feature_net(net, path, info)
    return path, {**info, "features": str(path), "seconds": time.perf_counter() - began}


def bench_feature_net(cfg, args, out: Path, device) -> tuple:
    """``(net, report)``: the benchmark's feature network on ``device``: Inception-v3 for
    ``--features inception`` (FID), ``args.features``, or the one cached at
    ``out/features.safetensors``, or one trained there for ``args.feature_train_steps`` (see
    :func:`feature_net`)."""
    from nudiff.eval.features import load_feature_net

    if args.features == "inception":
        if not hasattr(args, "inception_weights"):
            raise ValueError(
                "this benchmark also classifies its samples: give --features a file from "
                "'nudiff features train', or leave it out to train one"
            )
        from nudiff.eval.inception import InceptionV3

        net = InceptionV3(args.inception_weights, device)
        return net, {"features": "inception", "inception_weights": str(net.path)}
    path = out / "features.safetensors"
    path, info = feature_net(cfg, path, args.features, args.feature_train_steps, args.seed, device)
    return load_feature_net(path).to(device), info


def reference_features(net, images):
    """Features (numpy ``(N, D)``) of uint8 images (numpy ``(N, H, W[, C])`` or tensor
    ``(N, C, H, W)``) fitted to the feature network's input shape, on the network's device
    (Inception-v3, :class:`~nudiff.eval.inception.InceptionV3`, takes them as they are)."""
    from nudiff.eval.commands import fit_images
    from nudiff.eval.features import extract_features

    if not hasattr(net, "in_channels"):
        return net.features(images)
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


def sample_and_score(run, n: int, net, f_ref, seed: int = 0, grid_png=None, device="auto") -> dict:
    """Sample ``n`` images from a run (or checkpoint) on ``device`` with its config's sampler
    and score them against the reference features: FD, its standard error, KID, NFE, ms per
    sample. Writes the first 64 as a grid to ``grid_png`` if given."""
    from nudiff.run import sample_run

    samples = sample_run(run, n=n, seed=seed, progress=True, device=device)
    return score_samples(samples, net, f_ref, seed, grid_png)


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
