"""SiD: a teacher at 20 NFE vs its data-free one-step distillation (1 NFE) on MNIST 32x32.

The teacher is ``--teacher`` (a run folder), or the packaged ``mnist32.yaml`` (with
``--teacher-set`` overrides) trained for ``--teacher-train-minutes`` into ``OUT/teacher``.
``nudiff distill sid`` then trains the generator for ``--train-minutes`` into ``OUT/sid`` (both
reused by a later call with the same config). Each model draws ``--n-samples`` images (the
teacher with its config's sampler), scored by the Frechet distance (with its bootstrap standard
error) and KID against as many held-out training images in the offline feature network's space;
ms per sample is the sampling wall-clock at batch 256. Rows: ``model, nfe, fd, fd_se, kid,
ms_per_sample, distill_minutes``; the ``comparison`` block gives ``fd_ratio`` (generator /
teacher), ``speedup`` (teacher ms / generator ms) and whether the target (``fd_ratio <= 1.5``
and ``speedup >= 15``) is met.

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    environment,
    held_out_reference,
    sample_and_score,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

TEACHER = str(CONFIG_DIR / "mnist32.yaml")
#: distillation settings of the benchmark (``--set`` comes after them): a CPU-sized batch and
#: a learning rate for a budget of minutes (SiD's 1e-5 is for millions of images)
DISTILL_SETS = ("train.batch_size=32", "train.lr=3e-5", "train.ema_halflife_images=2000")


def add_arguments(p) -> None:
    add(p, "--teacher", default=None)
    add(p, "--teacher-train-minutes", default=20.0)
    deprecated(p, "--teacher-minutes", "--teacher-train-minutes")
    add(p, "--teacher-set")
    add(p, "--train-minutes", "wall-clock minutes of distillation of the generator", default=20.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--n-samples", "samples per model, and held-out reference images", default=2000)
    add(p, "--data", "the MNIST .npz of the teacher trained here (default: the config's)")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/sid")
    add_feature_options(p)
    add(p, "--set", "override a key of the distillation's config (repeatable)")


def distill_sets(minutes: float, extra=None) -> list[str]:
    """``--set`` items of a benchmark's distillation: :data:`DISTILL_SETS`, a wall-clock budget
    of ``minutes`` (no step limit), no TensorBoard, then ``extra``."""
    return [
        *DISTILL_SETS,
        f"train.max_minutes={minutes}",
        "train.steps=10000000",
        "train.tensorboard=false",
        *(extra or []),
    ]


def distill_or_reuse(cfg, run_dir: Path, device=None) -> dict:
    """:func:`nudiff.bench.common.train_or_reuse` for a distillation."""
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
    out = distill(cfg, run_dir, device=device)
    kept = {k: out[k] for k in ("steps", "images_per_s", "stopped")}
    kept.update(seconds=time.perf_counter() - began, config=text)
    summary.write_text(json.dumps(kept))
    return kept


def run(args) -> dict:
    from nudiff.devices import resolve_device
    from nudiff.distill.run import distill_config
    from nudiff.run import load_run

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.teacher:
        teacher, taught = Path(args.teacher), None
        tcfg, _ = load_run(teacher, device="cpu")  # its config
    else:
        teacher = out / "teacher"
        minutes = args.teacher_train_minutes
        tcfg = budget_config(TEACHER, minutes, args.data, args.teacher_set)
        print(f"== teacher: training {minutes:g} min into {teacher}", flush=True)
        taught = train_or_reuse(tcfg, teacher, device)
    net, feature_info = bench_feature_net(tcfg, args, out, device)
    f_ref, floor = held_out_reference(tcfg, net, args.n_samples)

    sets = distill_sets(args.train_minutes, args.set)
    cfg = distill_config(teacher, sets)
    print(f"== SiD: distilling {args.train_minutes:g} min into {out / 'sid'}", flush=True)
    distilled = distill_or_reuse(cfg, out / "sid", device)

    result = {
        "benchmark": "sid",
        "environment": environment(device),
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
        grid = out / f"{name}_samples.png"
        scored = sample_and_score(run_dir, args.n_samples, net, f_ref, args.seed, grid, device)
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
