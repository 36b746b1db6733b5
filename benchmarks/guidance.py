"""Classifier-free guidance on class-conditional MNIST: class accuracy and FD per guidance weight.

Trains ``configs/mnist32_classcond.yaml`` for ``--budget-minutes`` (or reuses the run), then,
for every weight in ``--guidance``, samples ``--per-class`` images of each of the 10 classes
(the same noise for every weight) and reports the share the offline feature network classifies
as the class asked for, and the Frechet distance (with its bootstrap standard error) and KID of
all of them against as many held-out training images in that network's feature space. Writes
one grid per weight (one row per class) and ``--json``.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import (
    budget_config,
    check_holdout,
    environment,
    feature_net,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p) -> None:
    p.add_argument("--budget-minutes", type=float, default=15.0)
    p.add_argument("--guidance", default="1,1.5,2,3,5", help="weights, comma-separated")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--config", default=str(ROOT / "configs" / "mnist32_classcond.yaml"))
    p.add_argument("--data", default=None, help="the MNIST .npz (default: the config's)")
    p.add_argument("--out", default="runs/guidance")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override a config key")
    p.add_argument("--seed", type=int, default=0)


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--guidance takes numbers separated by commas, got {text!r}") from None
    if not weights or min(weights) < 0:
        raise ValueError(f"--guidance weights must be >= 0, got {text!r}")
    return weights


def run(args) -> dict:
    import torch

    from nudiff.data import save_image_grid
    from nudiff.data.transforms import float_to_uint8
    from nudiff.eval.commands import fit_images
    from nudiff.eval.features import classify, load_feature_net
    from nudiff.run import load_run, sample_model

    weights = parse_weights(args.guidance)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = budget_config(args.config, args.budget_minutes, args.data, args.set)
    k = cfg.model.num_classes
    if k is None:
        raise ValueError(f"{args.config} is not class-conditional (model.num_classes)")
    n = k * args.per_class
    check_holdout(cfg, n)
    features, feature_info = feature_net(
        cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    shape = (net.in_channels, net.resolution, net.resolution)
    f_ref, floor = held_out_reference(cfg, net, n)

    print(f"== training {args.budget_minutes:g} min into {out / 'run'}", flush=True)
    trained = train_or_reuse(cfg, out / "run")
    run_cfg, model = load_run(out / "run")
    labels = torch.arange(k).repeat_interleave(args.per_class)
    rows = []
    for w in weights:
        samples = sample_model(
            run_cfg, model, n, seed=args.seed, labels=labels, guidance=w, progress=True
        )
        grid = samples.images.view(k, args.per_class, *samples.images.shape[1:])[:, :10]
        save_image_grid(grid.flatten(0, 1).clamp(-1, 1), out / f"guidance_{w:g}.png", nrow=10)
        gen = fit_images(float_to_uint8(samples.images.clamp(-1, 1)).cpu(), shape)
        accuracy = float((torch.as_tensor(classify(net, gen)) == labels).float().mean())
        row = {"guidance": w, "class_accuracy": accuracy, **score_samples(samples, net, f_ref)}
        rows.append(row)
        print(
            f"guidance {w:g}: class accuracy {accuracy:.3f}, FD {row['fd']:.2f} +- "
            f"{row['fd_se']:.2f}, {row['ms_per_sample']:.1f} ms/sample",
            flush=True,
        )
    best = min(rows, key=lambda r: r["fd"])
    result = {
        "benchmark": "guidance",
        "environment": environment(),
        "config": args.config,
        "budget_minutes": args.budget_minutes,
        "steps": trained["steps"],
        "n_samples": n,
        "per_class": args.per_class,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": rows,
        "best_fd_guidance": best["guidance"],
        "accuracy_rises": all(
            a["class_accuracy"] <= b["class_accuracy"] for a, b in zip(rows, rows[1:], strict=False)
        ),
    }
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
