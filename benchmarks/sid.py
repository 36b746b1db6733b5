"""SiD: a teacher at 20 NFE vs its data-free one-step distillation (1 NFE) on MNIST 32x32.

The teacher is ``--teacher`` (a run folder), or ``configs/mnist32.yaml`` trained for
``--teacher-minutes`` into ``OUT/teacher``. ``nudiff distill sid`` then trains the generator for
``--budget-minutes`` into ``OUT/sid`` (both reused by a later call with the same config). Each
model draws ``--n-samples`` images (the teacher with its config's sampler), scored by the
Frechet distance (with its bootstrap standard error) and KID against as many held-out training
images in the offline feature network's space; ms per sample is the sampling wall-clock at
batch 256. Rows: ``model, nfe, fd, fd_se, kid, ms_per_sample, distill_minutes``; the
``comparison`` block gives ``fd_ratio`` (generator / teacher), ``speedup`` (teacher ms / generator
ms) and whether the target (``fd_ratio <= 1.5`` and ``speedup >= 15``) is met.

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.common import (
    budget_config,
    environment,
    feature_net,
    held_out_reference,
    sample_and_score,
    train_or_reuse,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "configs" / "mnist32.yaml"
#: distillation settings of the benchmark (``--set`` comes after them): a CPU-sized batch and
#: a learning rate for a budget of minutes (SiD's 1e-5 is for millions of images)
DISTILL_SETS = ("train.batch_size=32", "train.lr=3e-5", "train.ema_halflife_images=2000")


def add_arguments(p) -> None:
    p.add_argument("--teacher", default=None, help="teacher run folder (default: train one)")
    p.add_argument("--teacher-minutes", type=float, default=20.0)
    p.add_argument(
        "--teacher-set", action="append", default=[], help="override for the teacher's config"
    )
    p.add_argument("--budget-minutes", type=float, default=20.0, help="distillation minutes")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--data", default=None, help="the MNIST .npz (default: the config's)")
    p.add_argument("--out", default="runs/sid")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override for the distillation")
    p.add_argument("--seed", type=int, default=0)


def distill_or_reuse(cfg, run_dir: Path) -> dict:
    """:func:`benchmarks.common.train_or_reuse` for a distillation."""
    from nudiff.config import dump_config
    from nudiff.distill.run import distill

    summary, text = run_dir / "train_summary.json", dump_config(cfg)
    if summary.is_file():
        kept = json.loads(summary.read_text())
        if kept.get("config") != text:
            raise ValueError(f"{run_dir} holds a run distilled with another config; delete it")
        print(f"   reusing {run_dir}; delete it to retrain", flush=True)
        return kept
    began = time.perf_counter()
    out = distill(cfg, run_dir)
    kept = {k: out[k] for k in ("steps", "images_per_s", "stopped")}
    kept.update(seconds=time.perf_counter() - began, config=text)
    summary.write_text(json.dumps(kept))
    return kept


def run(args) -> dict:
    from nudiff.distill.run import distill_config
    from nudiff.eval.features import load_feature_net
    from nudiff.run import load_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.teacher:
        teacher, taught = Path(args.teacher), None
        tcfg, _ = load_run(teacher)
    else:
        teacher = out / "teacher"
        tcfg = budget_config(TEACHER, args.teacher_minutes, args.data, args.teacher_set)
        print(f"== teacher: training {args.teacher_minutes:g} min into {teacher}", flush=True)
        taught = train_or_reuse(tcfg, teacher)
    features, feature_info = feature_net(
        tcfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    f_ref, floor = held_out_reference(tcfg, net, args.n_samples)

    sets = [
        *DISTILL_SETS,
        f"train.max_minutes={args.budget_minutes}",
        "train.steps=10000000",
        "train.tensorboard=false",
        *args.set,
    ]
    cfg = distill_config(teacher, sets)
    print(f"== SiD: distilling {args.budget_minutes:g} min into {out / 'sid'}", flush=True)
    distilled = distill_or_reuse(cfg, out / "sid")

    result = {
        "benchmark": "sid",
        "environment": environment(),
        "teacher": str(teacher),
        "teacher_training": taught and {k: taught[k] for k in ("steps", "seconds")},
        "distillation": {k: distilled[k] for k in ("steps", "images_per_s", "seconds")},
        "distill_settings": sets,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name, run_dir, minutes in (
        ("teacher", teacher, 0.0),
        ("sid", out / "sid", distilled["seconds"] / 60),
    ):
        scored = sample_and_score(
            run_dir, args.n_samples, net, f_ref, args.seed, out / f"{name}_samples.png"
        )
        row = {"model": name, "distill_minutes": minutes, **scored}
        result["rows"].append(row)
        print(
            f"{name}: {row['nfe']} NFE, FD {row['fd']:.2f} +- {row['fd_se']:.2f}, "
            f"{row['ms_per_sample']:.2f} ms/sample",
            flush=True,
        )
    t, g = result["rows"]
    ratio, speedup = g["fd"] / t["fd"], t["ms_per_sample"] / g["ms_per_sample"]
    met = ratio <= 1.5 and speedup >= 15
    result["comparison"] = {"fd_ratio": ratio, "speedup": speedup, "target_met": met}
    print(f"FD ratio {ratio:.2f}, speed-up {speedup:.1f}x, target met: {met}")
    write_json(result, args.json)
    return result
