"""Multi-scale vs uniform quality at equal training wall-clock (feature Frechet distance).

Trains the uniform and the multi-scale model (``configs/mnist32_uniform.yaml`` and
``configs/mnist32_multiscale.yaml``: the same UNet family and parameter count) one after the
other for the same wall-clock budget, samples ``--n-samples`` images from each with the
configs' sampler, and compares them with the same number of held-out images (the last images of
the training split, which the configs hold out of training) in the feature space of the offline
feature network (``--features``, or one trained here on the other training images). Writes both
runs, sample grids and ``--json``.

Run it with nothing else on the machine: the budget is wall-clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import environment, feature_net, train_or_reuse, write_json

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p) -> None:
    p.add_argument("--budget-minutes", type=float, default=20.0, help="training per model")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--uniform-config", default=str(ROOT / "configs" / "mnist32_uniform.yaml"))
    p.add_argument("--multiscale-config", default=str(ROOT / "configs" / "mnist32_multiscale.yaml"))
    p.add_argument("--data", default=None, help="the .npz both configs read (default: theirs)")
    p.add_argument("--out", default="runs/multiscale_vs_uniform")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override for both configs")
    p.add_argument("--seed", type=int, default=0)


def _config(path: str, args):
    from nudiff.config import load_config

    overrides = [
        f"train.max_minutes={args.budget_minutes}",
        "train.steps=10000000",
        "train.sample_every=0",
        "train.tensorboard=false",
        *([f"data.path={args.data}"] if args.data else []),
        *args.set,
    ]
    return load_config(path, overrides)


def run(args) -> dict:
    from nudiff.config import dump_config
    from nudiff.data import save_image_grid
    from nudiff.data.transforms import float_to_uint8
    from nudiff.eval.commands import fit_images
    from nudiff.eval.features import extract_features, load_feature_net, load_images_npz
    from nudiff.eval.frechet import frechet_distance, gaussian_stats, kid
    from nudiff.run import sample_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {
        "uniform": _config(args.uniform_config, args),
        "multiscale": _config(args.multiscale_config, args),
    }
    if cfgs["uniform"].data.path != cfgs["multiscale"].data.path:
        raise ValueError("the two configs must read the same data")
    cfg = cfgs["uniform"]
    if cfg.data.holdout < args.n_samples:
        raise ValueError(
            f"--n-samples {args.n_samples} exceeds the {cfg.data.holdout} held-out images"
        )
    features, feature_info = feature_net(
        cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    shape = (net.in_channels, net.resolution, net.resolution)
    images, _ = load_images_npz(cfg.data.path)
    held_out = images[len(images) - cfg.data.holdout :]
    ref = fit_images(held_out[-args.n_samples :], shape)
    f_ref = extract_features(net, ref)
    # the floor: another held-out set of the same size against the reference (when available)
    floor = None
    if len(held_out) >= 2 * args.n_samples:
        other = extract_features(net, fit_images(held_out[: args.n_samples], shape))
        floor = frechet_distance(*gaussian_stats(other), *gaussian_stats(f_ref))

    result = {
        "benchmark": "multiscale_vs_uniform",
        "environment": environment(),
        "budget_minutes": args.budget_minutes,
        "n_samples": args.n_samples,
        "n_ref": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
    }
    for name, c in cfgs.items():
        run_dir = out / name
        print(f"== {name}: training for {args.budget_minutes} min into {run_dir}", flush=True)
        (out / f"{name}.yaml").write_text(dump_config(c))
        trained = train_or_reuse(c, run_dir)
        params = _parameters(run_dir)
        samples = sample_run(run_dir, n=args.n_samples, seed=args.seed, progress=True)
        gen = float_to_uint8(samples.images.clamp(-1, 1)).cpu()
        save_image_grid(samples.images[:64].clamp(-1, 1), out / f"{name}_samples.png")
        np.savez_compressed(out / f"{name}_samples.npz", x_train=gen.permute(0, 2, 3, 1).numpy())
        f_gen = extract_features(net, fit_images(gen, shape))
        fd = frechet_distance(*gaussian_stats(f_gen), *gaussian_stats(f_ref))
        kid_mean, kid_std = kid(f_gen, f_ref, subsets=100, subset_size=min(1000, args.n_samples))
        result[f"{name}_fd"] = fd
        result[name] = {
            "fd": fd,
            "kid": kid_mean,
            "kid_std": kid_std,
            "parameters": params,
            "train_steps": trained["steps"],
            "train_images_per_s": trained["images_per_s"],
            "sampler": c.sample.sampler,
            "nfe": samples.nfe,
            "sampling_s_per_sample": samples.seconds / args.n_samples,
            "run": str(run_dir),
        }
        print(
            f"{name}: FD {fd:.3f}, KID {kid_mean:.4f} +- {kid_std:.4f}, "
            f"{trained['steps']} steps, {samples.seconds / args.n_samples * 1e3:.1f} ms/sample",
            flush=True,
        )
    result["multiscale_not_worse"] = result["multiscale_fd"] <= result["uniform_fd"]
    result["sampling_speedup"] = (
        result["uniform"]["sampling_s_per_sample"] / result["multiscale"]["sampling_s_per_sample"]
    )
    write_json(result, args.json)
    return result


def _parameters(run_dir: Path) -> int:
    from nudiff.run import load_run

    _, model = load_run(run_dir)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
