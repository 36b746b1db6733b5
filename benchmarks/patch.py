"""Patch Diffusion vs full-image training at equal wall-clock on CIFAR-10 32x32.

Trains ``configs/cifar10_patch.yaml`` twice, the same UNet with coordinate channels in both:
with patch training (``patch``: random 8/16/32 crops, batch multiplied by ``(32 / size)^2``)
and without it (``full``: ``train.patch=null``). Each gets ``--budget-minutes`` of training in
``--checkpoints`` equal segments (each segment resumes the previous one exactly; the two modes
alternate segment by segment, so drifts of the machine's speed hit both alike). After every
segment ``--n-samples`` images are sampled (the config's sampler, full canvas) and scored by
the Frechet distance against as many held-out CIFAR-10 images in the feature space of the
offline feature network. Rows: ``mode, train_size, minutes, images_seen, fd`` (+ ``fd_se``,
KID, steps). ``--train-size N`` trains on the first ``N`` training images only (the
data-efficiency claim: run it with 5000). ``--plot`` draws FD against training minutes.

The target (issue 16): patch training reaches the full-image model's final FD in at most 60% of
its time, or ends with an FD at most the full model's.

Run it with nothing else on the machine: the budgets are wall-clock.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from benchmarks.common import (
    budget_config,
    check_holdout,
    environment,
    feature_net,
    held_out_reference,
    sample_and_score,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "patch")


def add_arguments(p) -> None:
    p.add_argument("--budget-minutes", type=float, default=30.0, help="training minutes each")
    p.add_argument("--checkpoints", type=int, default=5, help="evenly spaced scored checkpoints")
    p.add_argument("--train-size", type=int, default=None, help="train on the first N images")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--config", default=str(ROOT / "configs" / "cifar10_patch.yaml"))
    p.add_argument("--data", default=None, help="the CIFAR-10 .npz (default: the config's)")
    p.add_argument("--out", default="runs/patch")
    p.add_argument("--plot", default=None, help="PNG of FD against training minutes")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override for both modes")
    p.add_argument("--seed", type=int, default=0)


def mode_config(args, mode: str, minutes: float):
    """The config of ``mode`` for a segment of ``minutes``."""
    extra = [] if args.train_size is None else [f"data.limit={args.train_size}"]
    sets = [*args.set, "train.patch=null"] if mode == "full" else args.set  # after the user's
    cfg = budget_config(args.config, minutes, args.data, sets, extra=extra)
    if mode == "patch" and cfg.train.patch is None:
        raise ValueError(f"{args.config} has no train.patch section")
    return cfg


def train_segment(args, mode: str, run_dir: Path, k: int, minutes: float) -> dict:
    """Segment ``k`` (1-based) of ``mode``: train ``minutes`` more (resuming segment ``k - 1``),
    or reuse it from an earlier call. Returns its steps, training minutes and images so far
    (from the checkpoint) and the checkpoint."""
    from nudiff.run import train
    from nudiff.train.checkpoint import load_checkpoint

    summary = run_dir / f"segment_{k}.json"
    if summary.is_file():
        print(f"   reusing {summary}; delete {run_dir} to retrain", flush=True)
        return json.loads(summary.read_text())
    out = train(mode_config(args, mode, minutes), run_dir, resume=k > 1)
    state = load_checkpoint(out["checkpoint"]).state
    kept = {
        "steps": state["step"],
        "minutes": state["elapsed"] / 60,
        "images_seen": state["images_seen"],
        "segment_images_per_s": out["images_per_s"],
        "checkpoint": out["checkpoint"],
    }
    summary.write_text(json.dumps(kept))
    return kept


def training_images(cfg) -> int:
    from nudiff.build import build_data

    return len(build_data(cfg))


def comparison(rows: list[dict]) -> dict:
    """The issue's verdict from the rows: the full model's final FD, the first time patch
    training reaches it (minutes, and as a share of the full model's time), the final FDs."""
    full = [r for r in rows if r["mode"] == "full"]
    patch = [r for r in rows if r["mode"] == "patch"]
    if not full or not patch:
        return {}
    target = full[-1]["fd"]
    reached = next((r for r in patch if r["fd"] <= target), None)
    share = reached["minutes"] / full[-1]["minutes"] if reached else math.nan
    return {
        "full_final_fd": target,
        "patch_final_fd": patch[-1]["fd"],
        "fd_se": math.hypot(full[-1]["fd_se"], patch[-1]["fd_se"]),
        "patch_minutes_to_full_final_fd": reached["minutes"] if reached else None,
        "time_share": share,
        "target_met": bool(share <= 0.6 or patch[-1]["fd"] <= target),
    }


def plot(rows: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        ax.errorbar(
            [r["minutes"] for r in rs],
            [r["fd"] for r in rs],
            yerr=[r["fd_se"] for r in rs],
            marker="o",
            capsize=3,
            label=mode,
        )
    ax.set_xlabel("training minutes")
    ax.set_ylabel("feature FD (held-out)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> dict:
    from nudiff.eval.features import load_feature_net

    if args.checkpoints < 1 or args.budget_minutes <= 0:
        raise ValueError("--checkpoints must be >= 1 and --budget-minutes > 0")
    segment = args.budget_minutes / args.checkpoints
    cfg = mode_config(args, "patch", segment)  # validates both modes before any work
    mode_config(args, "full", segment)
    suffix = f"_n{args.train_size}" if args.train_size is not None else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_holdout(cfg, args.n_samples)
    features, feature_info = feature_net(
        cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    train_size = training_images(cfg)
    result = {
        "benchmark": "patch",
        "environment": environment(),
        "budget_minutes": args.budget_minutes,
        "checkpoints": args.checkpoints,
        "train_size": train_size,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "patch": cfg.train.patch.model_dump(),
        "rows": [],
    }
    began = time.perf_counter()
    for k in range(1, args.checkpoints + 1):
        for mode in MODES:
            run_dir = out / f"{mode}{suffix}"
            print(f"== {mode}: segment {k}/{args.checkpoints} into {run_dir}", flush=True)
            seg = train_segment(args, mode, run_dir, k, segment)
            scored = seg.pop("scores", None)  # an earlier call's (its checkpoint may be gone)
            if scored is None or scored["n"] != args.n_samples:
                grid = out / f"{mode}{suffix}_{k}_samples.png"
                scored = sample_and_score(
                    seg["checkpoint"], args.n_samples, net, f_ref, args.seed, grid_png=grid
                )
                (run_dir / f"segment_{k}.json").write_text(json.dumps({**seg, "scores": scored}))
            row = {
                "mode": mode,
                "train_size": train_size,
                "minutes": seg["minutes"],
                "images_seen": seg["images_seen"],
                "fd": scored["fd"],
                "fd_se": scored["fd_se"],
                "kid": scored["kid"],
                "steps": seg["steps"],
                "segment_images_per_s": seg["segment_images_per_s"],
            }
            result["rows"].append(row)
            print(
                f"{mode} @ {row['minutes']:.2f} min: {row['steps']} steps, "
                f"{row['images_seen']} images, FD {row['fd']:.2f} +- {row['fd_se']:.2f}",
                flush=True,
            )
    result["comparison"] = comparison(result["rows"])
    result["wall_seconds"] = time.perf_counter() - began
    if args.plot:
        plot(result["rows"], args.plot, f"CIFAR-10 32x32, {train_size} training images")
        result["plot"] = str(args.plot)
    print(json.dumps(result["comparison"]), flush=True)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
