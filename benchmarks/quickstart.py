"""The quick start's quality, measured: train its recipe, sample, feature Frechet distance.

Runs ``configs/quickstart.yaml`` (with ``--set`` overrides) as ``make quickstart`` does: its
step budget, under its time guard. Scores ``--n-samples`` samples (the config's sampler) in the
feature space of the offline shapes network, trained here on ``--n-train`` exported training
shapes, against ``--n-samples`` fresh shapes that training never saw (``data.seed`` + 1), and
gives the same measure between as many training and fresh shapes: the floor of that sample
count. The checkpoint at half the step budget is scored the same way: what a machine half as
fast gets when the time guard stops it there.
Reports ``steps, train_seconds, fd, floor_fd`` (and FD standard errors, KID, NFE, ms per sample)
for both, as JSON with ``--json``.

The step budget makes the figures independent of the machine's speed; ``train_seconds`` is
only meaningful with nothing else running.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import (
    environment,
    reference_features,
    sample_and_score,
    score_features,
    train_or_reuse,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p) -> None:
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--out", default="runs/bench_quickstart")
    p.add_argument("--n-samples", type=int, default=2000, help="samples and reference images")
    p.add_argument("--n-train", type=int, default=20000, help="shapes for the feature network")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override a config key")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> dict:
    from nudiff.config import load_config
    from nudiff.eval.commands import export_data, train_features
    from nudiff.eval.features import load_feature_net, load_images_npz
    from nudiff.train.checkpoint import list_checkpoints

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, [*args.set, "train.tensorboard=false"])
    # a checkpoint at half the step budget: what a machine half as fast reaches in the guard
    cfg.train.checkpoint_every = max(1, cfg.train.steps // 2)
    if cfg.data.name not in ("shapes", "fields"):
        raise ValueError(f"the quick-start benchmark needs procedural data, got {cfg.data.name}")
    # the recipe of the README: exported training shapes, fresh shapes as the reference
    overrides = [*args.set, f"data.size={max(args.n_train, args.n_samples)}"]
    train_npz, ref_npz = out / "shapes_train.npz", out / "shapes_ref.npz"
    export_data(args.config, train_npz, n=args.n_train, overrides=overrides)
    fresh = [*overrides, f"data.seed={cfg.data.seed + 1}"]
    export_data(args.config, ref_npz, n=args.n_samples, overrides=fresh)
    features = out / "features.safetensors"
    info = train_features(train_npz, features, steps=args.feature_steps, seed=args.seed)
    net = load_feature_net(features)
    f_ref = reference_features(net, load_images_npz(ref_npz)[0])
    f_train = reference_features(net, load_images_npz(train_npz)[0][: args.n_samples])
    floor = score_features(f_train, f_ref, args.seed)

    run_dir = out / "run"
    trained = train_or_reuse(cfg, run_dir)
    steps = trained["steps"]
    half = [(s, p) for s, p in list_checkpoints(run_dir) if s == cfg.train.steps // 2]
    if not half:
        raise ValueError(f"the run stopped before half of its {cfg.train.steps} steps")
    half_steps, half_dir = half[-1]
    result = {
        "benchmark": "quickstart",
        "environment": environment(),
        "config": args.config,
        "overrides": args.set,
        "n_samples": args.n_samples,
        "n_ref": args.n_samples,
        "feature_net": {k: info[k] for k in ("accuracy", "n_train", "n_holdout", "seconds")},
        "floor_fd": floor["fd"],
        "floor_fd_se": floor["fd_se"],
        "floor_kid": floor["kid"],
    }
    for name, where, n_steps in (("full", run_dir, steps), ("half", half_dir, half_steps)):
        print(f"== {name}: {n_steps} steps", flush=True)
        scored = sample_and_score(
            where, args.n_samples, net, f_ref, args.seed, grid_png=out / f"{name}_samples.png"
        )
        result[name] = {"steps": n_steps, **scored}
        print(
            f"{name}: {n_steps} steps, FD {scored['fd']:.2f} +- {scored['fd_se']:.2f} "
            f"(floor {floor['fd']:.2f}), KID {scored['kid']:.3f} +- {scored['kid_std']:.3f}",
            flush=True,
        )
    result.update(
        steps=steps,
        train_seconds=trained["seconds"],
        stopped=trained["stopped"],
        fd=result["full"]["fd"],
        half_steps=half_steps,
        half_fd=result["half"]["fd"],
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
