"""Patch Diffusion vs full-image training at equal wall-clock on CIFAR-10 32x32.

Trains the packaged ``cifar10_patch.yaml`` (``--config``) once per mode of ``--modes``, the
same UNet with coordinate channels in every one: with patch training (``patch``: random
8/16/32 crops with the config's probabilities, batch multiplied by ``(32 / size)^2``), with the
progressive schedule (``progressive``: from 8 to 32 over ``--ramp-steps`` steps, then full
images) and without patches (``full``: ``train.patch=null``). Each gets
``--train-minutes`` of training in ``--checkpoints`` equal segments (each segment resumes the
previous one exactly; the modes alternate segment by segment, so drifts of the machine's
speed hit both alike). After every segment ``--n-samples`` images are sampled (the config's
sampler, full canvas) and scored by the Frechet distance against as many held-out CIFAR-10
images in the feature space of the offline feature network. Rows: ``mode, train_size, minutes,
images_seen, fd`` (+ ``fd_se``, KID, steps). ``--n-train-images N`` trains on the first ``N``
training images only (the data-efficiency claim: run it with 5000). ``--plot`` draws FD against
training minutes.

The target (issue 16): patch training reaches the full-image model's final FD in at most 60% of
its time, or ends with an FD at most the full model's.

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
    sample_and_score,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

MODES = ("full", "patch", "progressive")


def add_arguments(p) -> None:
    add(p, "--train-minutes", "wall-clock minutes of training per mode", default=30.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--checkpoints", "evenly spaced checkpoints to score per mode", default=5)
    add(p, "--modes", f"training modes: {', '.join(MODES)}", many=True, default=["full", "patch"])
    add(p, "--ramp-steps", "the progressive mode's ramp from small to full patches", default=1000)
    add(p, "--n-train-images", default=None)
    deprecated(p, "--train-size", "--n-train-images")
    add(p, "--n-samples", "samples per checkpoint, and held-out reference images", default=2000)
    add(p, "--config", default=str(CONFIG_DIR / "cifar10_patch.yaml"))
    add(p, "--data", "the CIFAR-10 .npz (default: the config's)")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/patch")
    add(p, "--plot", "also draw FD against training minutes as a PNG figure here")
    add_feature_options(p)
    add(p, "--set", "override a key of the config of both modes (repeatable)")


def mode_config(args, mode: str, minutes: float):
    """The config of ``mode`` for a segment of ``minutes``."""
    extra = [] if args.n_train_images is None else [f"data.limit={args.n_train_images}"]
    sets = list(args.set or [])
    if mode == "full":
        sets.append("train.patch=null")
    elif mode == "progressive":
        ramp = f"train.patch.ramp_steps={args.ramp_steps}"
        sets += ["train.patch.schedule=progressive", "train.patch.probs=null", ramp]
    cfg = budget_config(args.config, minutes, args.data, sets, extra=extra)
    if mode != "full" and cfg.train.patch is None:
        raise ValueError(f"{args.config} has no train.patch section")
    return cfg


def train_segment(args, mode: str, run_dir: Path, k: int, minutes: float, device=None) -> dict:
    """Segment ``k`` (1-based) of ``mode``: train ``minutes`` more (resuming segment ``k - 1``),
    or reuse it from an earlier call. Returns its steps, training minutes and images so far
    (from the checkpoint) and the checkpoint."""
    from nudiff.run import train
    from nudiff.training.checkpoint import load_checkpoint

    summary = run_dir / f"segment_{k}.json"
    if summary.is_file():
        print(f"   reusing {summary}; delete {run_dir} to retrain", flush=True)
        return json.loads(summary.read_text())
    out = train(mode_config(args, mode, minutes), run_dir, resume=k > 1, device=device)
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
    """The verdict from the rows: the full model's final FD, the first time patch training
    reaches it (minutes, and as a share of the full model's time), the final FDs (and the
    progressive schedule's, when it ran)."""
    full = [r for r in rows if r["mode"] == "full"]
    patch = [r for r in rows if r["mode"] == "patch"]
    if not full or not patch:
        return {}
    target = full[-1]["fd"]
    reached = next((r for r in patch if r["fd"] <= target), None)
    share = reached["minutes"] / full[-1]["minutes"] if reached else math.nan
    out = {
        "full_final_fd": target,
        "patch_final_fd": patch[-1]["fd"],
        "fd_se": math.hypot(full[-1]["fd_se"], patch[-1]["fd_se"]),
        "patch_minutes_to_full_final_fd": reached["minutes"] if reached else None,
        "time_share": share,
        "target_met": bool(share <= 0.6 or patch[-1]["fd"] <= target),
    }
    progressive = [r for r in rows if r["mode"] == "progressive"]
    if progressive:
        out["progressive_final_fd"] = progressive[-1]["fd"]
        out["progressive_fd_se"] = progressive[-1]["fd_se"]
    return out


def plot(rows: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode in dict.fromkeys(r["mode"] for r in rows):
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
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    if args.checkpoints < 1 or args.train_minutes <= 0:
        raise ValueError("--checkpoints must be >= 1 and --train-minutes > 0")
    segment = args.train_minutes / args.checkpoints
    modes = [m.strip() for m in args.modes if m.strip()]
    if not modes or set(modes) - set(MODES) or len(set(modes)) != len(modes):
        raise ValueError(f"--modes takes distinct names from {', '.join(MODES)}, got {args.modes}")
    cfgs = [mode_config(args, mode, segment) for mode in modes]  # every mode checked first
    cfg = next((c for c in cfgs if c.train.patch is not None), cfgs[0])
    suffix = f"_n{args.n_train_images}" if args.n_train_images is not None else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_holdout(cfg, args.n_samples)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    train_size = training_images(cfg)
    result = {
        "benchmark": "patch",
        "environment": environment(device),
        "budget_minutes": args.train_minutes,
        "checkpoints": args.checkpoints,
        "train_size": train_size,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "modes": modes,
        "patch": cfg.train.patch.model_dump() if cfg.train.patch else None,
        "rows": [],
    }
    began = time.perf_counter()
    for k in range(1, args.checkpoints + 1):
        for mode in modes:
            run_dir = out / f"{mode}{suffix}"
            print(f"== {mode}: segment {k}/{args.checkpoints} into {run_dir}", flush=True)
            seg = train_segment(args, mode, run_dir, k, segment, device)
            scored = seg.pop("scores", None)  # an earlier call's (its checkpoint may be gone)
            if scored is None or scored["n"] != args.n_samples:
                grid = out / f"{mode}{suffix}_{k}_samples.png"
                scored = sample_and_score(
                    seg["checkpoint"], args.n_samples, net, f_ref, args.seed, grid, device
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
