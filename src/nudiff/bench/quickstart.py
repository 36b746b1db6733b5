"""The quick start's quality, measured: train its recipe, sample, feature Frechet distance.

Runs the packaged ``quickstart.yaml`` (``--config``, with ``--set`` overrides) as ``make
quickstart`` does: its step budget, under its time guard. Scores ``--n-samples`` samples (the
config's sampler) in the feature space of the offline shapes network, trained here for
``--feature-train-steps`` on ``--n-feature-images`` exported training shapes, against
``--n-samples`` fresh shapes that training never saw (``data.seed`` + 1), and gives the same
measure between as many training and fresh shapes: the floor of that sample count. The
checkpoint at half the step budget is scored the same way: what a machine half as fast gets when
the time guard stops it there. Reports ``steps, train_seconds, fd, floor_fd`` (and FD standard
errors, KID, NFE, ms per sample) for both, as JSON with ``--json``.

The step budget makes the figures independent of the machine's speed; ``train_seconds`` is
only meaningful with nothing else running.
"""

from __future__ import annotations

from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    environment,
    reference_features,
    sample_and_score,
    score_features,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR


def add_arguments(p) -> None:
    add(p, "--config", default=str(CONFIG_DIR / "quickstart.yaml"))
    out = "folder of the run, the exported shapes and the feature network"
    add(p, "--out", out, default="runs/bench_quickstart")
    add(p, "--n-samples", "samples and reference images", default=2000)
    add(p, "--n-feature-images", "exported shapes the feature network trains on", default=20000)
    deprecated(p, "--n-train", "--n-feature-images")
    add_feature_options(p, features=False)
    add(p, "--set")


def run(args) -> dict:
    from nudiff.config import load_config
    from nudiff.devices import resolve_device
    from nudiff.eval.commands import export_data, train_features
    from nudiff.eval.features import load_feature_net, load_images_npz
    from nudiff.training.checkpoint import list_checkpoints

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, [*(args.set or []), "train.tensorboard=false"])
    # a checkpoint at half the step budget: what a machine half as fast reaches in the guard
    cfg.train.checkpoint_every = max(1, cfg.train.steps // 2)
    if cfg.data.name not in ("shapes", "fields"):
        raise ValueError(f"the quick-start benchmark needs procedural data, got {cfg.data.name}")
    # the recipe of the README: exported training shapes, fresh shapes as the reference
    overrides = [*(args.set or []), f"data.size={max(args.n_feature_images, args.n_samples)}"]
    train_npz, ref_npz = out / "shapes_train.npz", out / "shapes_ref.npz"
    export_data(args.config, train_npz, n=args.n_feature_images, overrides=overrides)
    fresh = [*overrides, f"data.seed={cfg.data.seed + 1}"]
    export_data(args.config, ref_npz, n=args.n_samples, overrides=fresh)
    features = out / "features.safetensors"
    info = train_features(
        train_npz, features, steps=args.feature_train_steps, seed=args.seed, device=device
    )
    net = load_feature_net(features).to(device)
    f_ref = reference_features(net, load_images_npz(ref_npz)[0])
    f_train = reference_features(net, load_images_npz(train_npz)[0][: args.n_samples])
    floor = score_features(f_train, f_ref, args.seed)

    run_dir = out / "run"
    trained = train_or_reuse(cfg, run_dir, device)
    steps = trained["steps"]
    half = [(s, p) for s, p in list_checkpoints(run_dir) if s == cfg.train.steps // 2]
    if not half:
        raise ValueError(f"the run stopped before half of its {cfg.train.steps} steps")
    half_steps, half_dir = half[-1]
    result = {
        "benchmark": "quickstart",
        "environment": environment(device),
        "config": args.config,
        "overrides": args.set or [],
        "n_samples": args.n_samples,
        "n_ref": args.n_samples,
        "feature_net": {k: info[k] for k in ("accuracy", "n_train", "n_holdout", "seconds")},
        "floor_fd": floor["fd"],
        "floor_fd_se": floor["fd_se"],
        "floor_kid": floor["kid"],
    }
    for name, where, n_steps in (("full", run_dir, steps), ("half", half_dir, half_steps)):
        print(f"== {name}: {n_steps} steps", flush=True)
        grid = out / f"{name}_samples.png"
        scored = sample_and_score(where, args.n_samples, net, f_ref, args.seed, grid, device)
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
