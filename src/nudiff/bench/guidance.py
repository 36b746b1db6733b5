"""Classifier-free guidance on class-conditional MNIST: class accuracy and FD per guidance weight.

Trains the packaged ``mnist32_classcond.yaml`` (``--config``) for ``--train-minutes`` (or reuses
the run), then,
for every weight in ``--guidance``, samples ``--per-class`` images of each of the 10 classes
(the same noise for every weight) and reports the share the offline feature network classifies
as the class asked for, and the Frechet distance (with its bootstrap standard error) and KID of
all of them against as many held-out training images in that network's feature space. Writes
one grid per weight (one row per class) and ``--json``.
"""

from __future__ import annotations

from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    check_holdout,
    environment,
    held_out_reference,
    numbers,
    score_samples,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR


def add_arguments(p) -> None:
    add(p, "--train-minutes", default=15.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    weights = "classifier-free guidance weights to compare (1: conditional)"
    add(p, "--guidance", weights, many=True, default=[1, 1.5, 2, 3, 5])
    add(p, "--per-class", "samples per class and weight", default=100)
    add(p, "--config", default=str(CONFIG_DIR / "mnist32_classcond.yaml"))
    add(p, "--data", "the MNIST .npz (default: the config's)")
    add(p, "--out", "folder of the run, sample grids and feature network", default="runs/guidance")
    add_feature_options(p, inception=False)
    add(p, "--set")
    add(p, "--plot", "also draw FD and class accuracy against the guidance weight here")


def parse_weights(weights) -> list[float]:
    """``--guidance`` (a list, or comma-separated text) as floats, checked to be >= 0."""
    weights = numbers(weights, float, "--guidance")
    if not weights or min(weights) < 0:
        raise ValueError(f"--guidance weights must be >= 0, got {','.join(map(str, weights))}")
    return weights


def run(args) -> dict:
    import torch

    from nudiff.data import save_image_grid
    from nudiff.data.transforms import float_to_uint8
    from nudiff.devices import resolve_device
    from nudiff.eval.commands import fit_images
    from nudiff.eval.features import classify
    from nudiff.run import load_run, sample_model

    device = resolve_device(args.device)
    weights = parse_weights(args.guidance)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = budget_config(args.config, args.train_minutes, args.data, args.set)
    k = cfg.model.num_classes
    if k is None:
        raise ValueError(f"{args.config} is not class-conditional (model.num_classes)")
    n = k * args.per_class
    check_holdout(cfg, n)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    shape = (net.in_channels, net.resolution, net.resolution)
    f_ref, floor = held_out_reference(cfg, net, n)

    print(f"== training {args.train_minutes:g} min into {out / 'run'}", flush=True)
    trained = train_or_reuse(cfg, out / "run", device)
    run_cfg, model = load_run(out / "run", device=device)
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
        "environment": environment(device),
        "config": args.config,
        "budget_minutes": args.train_minutes,
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
    if args.plot:
        plot(result, args.plot)
    return result


def plot(result: dict, path: str) -> None:
    """FD (one standard error as bars) and class accuracy against the guidance weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["rows"], key=lambda r: r["guidance"])
    w = [r["guidance"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(
        w,
        [r["fd"] for r in rows],
        yerr=[r["fd_se"] for r in rows],
        marker="o",
        capsize=3,
        color="C0",
        label="FD",
    )
    if result.get("data_vs_data_fd") is not None:
        ax.axhline(result["data_vs_data_fd"], color="C0", ls=":", lw=1, label="FD, data vs data")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("Frechet distance (feature net)", color="C0")
    ax.set_ylim(bottom=0)
    acc = ax.twinx()
    acc.plot(w, [100 * r["class_accuracy"] for r in rows], marker="s", color="C1")
    acc.set_ylabel("class accuracy (%)", color="C1")
    ax.set_title(f"class-conditional MNIST, {result['n_samples']} samples per weight")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
