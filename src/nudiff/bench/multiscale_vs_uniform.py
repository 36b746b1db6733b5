"""Multi-scale vs uniform quality at equal training wall-clock, at several budgets.

Trains the uniform and the multi-scale model (the packaged ``mnist32_uniform.yaml`` and
``mnist32_multiscale.yaml``, or ``--uniform-config`` and ``--multiscale-config``) one after the
other and scores both at each of ``--train-minutes`` minutes of training: each model trains up
to the first budget, is scored, resumes up to the next (resuming is exact, and the learning rate
and EMA do not depend on the budget, so this is the run that budget would have given), and so
on. Scoring: ``--n-samples`` samples with the configs' sampler against as many held-out images
(the last images of the training split, which the configs hold out of training) in the feature
space of the offline feature network (``--features``, or one trained here on the other training
images for ``--feature-train-steps``): Frechet distance with its bootstrap standard error, KID
with its std over subsets, and sampling time per sample. Writes the runs, sample grids per
budget and ``--json``.

Run it with nothing else on the machine: the budgets are wall-clock.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    check_holdout,
    environment,
    held_out_reference,
    numbers,
    sample_and_score,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

MODELS = ("uniform", "multiscale")


def add_arguments(p) -> None:
    minutes = "wall-clock minutes of training per model at which both are scored, increasing"
    add(p, "--train-minutes", minutes, many=True, default=[5, 10, 20])
    deprecated(p, "--budgets", "--train-minutes")
    n_help = "samples per model and budget, and held-out reference images"
    add(p, "--n-samples", n_help, default=2000)
    add(p, "--uniform-config", default=str(CONFIG_DIR / "mnist32_uniform.yaml"))
    add(p, "--multiscale-config", default=str(CONFIG_DIR / "mnist32_multiscale.yaml"))
    add(p, "--data", "the .npz both configs read (default: theirs)")
    add(p, "--out", "folder of the runs and sample grids", default="runs/multiscale_vs_uniform")
    add_feature_options(p)
    add(p, "--set", "override a key of both configs (repeatable)")
    add(p, "--plot", "also draw FD against training minutes, both models, here")


def parse_budgets(budgets) -> list[float]:
    """``--train-minutes`` (a list, or comma-separated text) checked: positive, increasing."""
    budgets = numbers(budgets, float, "--train-minutes")
    if (
        not budgets
        or budgets[0] <= 0
        or any(b <= a for a, b in zip(budgets, budgets[1:], strict=False))
    ):
        raise ValueError(
            f"--train-minutes must be positive and increasing, got {','.join(map(str, budgets))}"
        )
    return budgets


def train_stage(path: str, args, run_dir: Path, budget: float, previous: float, device) -> dict:
    """Train ``run_dir`` from ``previous`` up to ``budget`` minutes (or reuse that stage from an
    earlier call): steps, training seconds so far, images/s of the stage, the checkpoint, and
    the stage's ``scores`` once :func:`run` has scored it."""
    from nudiff.run import train

    summary = run_dir / f"budget_{budget:g}.json"
    if summary.is_file():
        print(f"   reusing {summary}; delete {run_dir} to retrain", flush=True)
        return json.loads(summary.read_text())
    cfg = budget_config(path, budget - previous, args.data, args.set)
    began = time.perf_counter()
    out = train(cfg, run_dir, resume=previous > 0, device=device)
    before = json.loads((run_dir / f"budget_{previous:g}.json").read_text()) if previous else {}
    kept = {
        "steps": out["steps"],
        "train_seconds": before.get("train_seconds", 0.0) + time.perf_counter() - began,
        "stage_images_per_s": out["images_per_s"],
        "checkpoint": out["checkpoint"],
    }
    summary.write_text(json.dumps(kept))
    return kept


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    budgets = parse_budgets(args.train_minutes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"uniform": args.uniform_config, "multiscale": args.multiscale_config}
    cfgs = {name: budget_config(p, budgets[0], args.data, args.set) for name, p in paths.items()}
    if cfgs["uniform"].data.path != cfgs["multiscale"].data.path:
        raise ValueError("the two configs must read the same data")
    cfg = cfgs["uniform"]
    check_holdout(cfg, args.n_samples)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)

    result = {
        "benchmark": "multiscale_vs_uniform",
        "environment": environment(device),
        "budgets_minutes": budgets,
        "n_samples": args.n_samples,
        "n_ref": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "parameters": {},
        "rows": [],
    }
    previous = 0.0
    for budget in budgets:
        scores = {}
        for name in MODELS:
            run_dir = out / name
            print(f"== {name}: training up to {budget:g} min into {run_dir}", flush=True)
            stage = train_stage(paths[name], args, run_dir, budget, previous, device)
            result["parameters"][name] = _parameters(run_dir)
            grid = out / f"{name}_{budget:g}min_samples.png"
            scored = stage.pop("scores", None)  # an earlier call's (its checkpoint may be gone)
            if scored is None or scored["n"] != args.n_samples:
                scored = sample_and_score(
                    stage["checkpoint"], args.n_samples, net, f_ref, args.seed, grid, device
                )
                summary = run_dir / f"budget_{budget:g}.json"
                summary.write_text(json.dumps({**stage, "scores": scored}))
            row = {"budget_minutes": budget, "model": name, **stage, **scored}
            result["rows"].append(row)
            scores[name] = scored
            print(
                f"{name} @ {budget:g} min: {stage['steps']} steps, FD {scored['fd']:.2f} "
                f"+- {scored['fd_se']:.2f}, KID {scored['kid']:.3f} +- {scored['kid_std']:.3f}, "
                f"{scored['ms_per_sample']:.1f} ms/sample",
                flush=True,
            )
        u, m = scores["uniform"], scores["multiscale"]
        se = math.hypot(u["fd_se"], m["fd_se"])
        result.setdefault("verdicts", []).append(
            {
                "budget_minutes": budget,
                "fd_difference": m["fd"] - u["fd"],
                "difference_in_se": (m["fd"] - u["fd"]) / se if se > 0 else math.nan,
                "multiscale_not_worse": m["fd"] <= u["fd"] + se,
                "sampling_speedup": u["ms_per_sample"] / m["ms_per_sample"],
            }
        )
        previous = budget
    write_json(result, args.json)
    if args.plot:
        plot(result, args.plot)
    return result


def plot(result: dict, path: str) -> None:
    """FD (one standard error as bars) against training minutes, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, label in (
        ("uniform", "uniform (pixels, VP)"),
        ("multiscale", "multi-scale (MSDiff)"),
    ):
        rows = sorted(
            (r["budget_minutes"], r["fd"], r["fd_se"]) for r in result["rows"] if r["model"] == name
        )
        if rows:
            x, fd, se = zip(*rows, strict=True)
            ax.errorbar(x, fd, yerr=se, marker="o", capsize=3, label=label)
    if result.get("data_vs_data_fd") is not None:
        ax.axhline(result["data_vs_data_fd"], color="k", ls=":", lw=1, label="data vs data")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("Frechet distance (feature net)")
    ax.set_title(f"MNIST 32x32, {result['n_samples']} samples per point")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def _parameters(run_dir: Path) -> int:
    from nudiff.run import load_run

    _, model = load_run(run_dir, device="cpu")  # only counted
    return sum(p.numel() for p in model.parameters())
