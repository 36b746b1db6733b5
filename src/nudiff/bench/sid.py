"""SiD: a teacher at 20 NFE vs its data-free one- and few-step distillations on MNIST 32x32.

The teacher is ``--teacher`` (a run folder), or the packaged ``mnist32.yaml`` (with
``--teacher-set`` overrides) trained for ``--teacher-train-minutes`` into ``OUT/teacher``.
``nudiff distill sid`` then distils it once per generator step count ``k`` of ``--steps``
(default 1; e.g. ``1,2,4``: three distillations) into ``OUT/sid`` (``k = 1``) and
``OUT/sid_k{k}``, each for ``--train-minutes`` (or ``--train-steps`` optimiser steps) in
``--checkpoints`` equal segments, each resuming the previous one exactly (all reused by a later
call with the same settings). Every model draws ``--n-samples`` images (the teacher with its
config's sampler, a generator with its ``k`` steps: ``k`` NFE), scored by the Frechet distance
(with its bootstrap standard error) and KID against as many held-out training images in the
offline feature network's space; ms per sample is the sampling wall-clock at batch 256.

Rows: ``model, k, nfe, iterations, fd, fd_se, kid, ms_per_sample, distill_minutes`` (the
teacher, then each generator at the end of its distillation, with its ``fd_ratio`` and
``speedup`` against the teacher); ``curve``: FD at every checkpoint of every distillation
(``k, checkpoint, iterations, images_seen, distill_minutes, fd, fd_se, kid``), drawn against
the distillation's iterations by ``--plot``. The ``comparison`` block compares the first ``k``
of ``--steps`` with the teacher: ``fd_ratio`` (generator / teacher), ``speedup`` (teacher ms /
generator ms) and whether the target (``fd_ratio <= 1.5`` and ``speedup >= 15``) is met.

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
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
    add(p, "--train-minutes", "wall-clock minutes of each distillation", default=20.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(
        p,
        "--train-steps",
        "optimiser steps of each distillation (replaces --train-minutes)",
        default=None,
    )
    add(
        p,
        "--steps",
        "generator steps k to distil, one distillation each (k NFE per sample), e.g. 1,2,4",
        many=True,
        default=[1],
    )
    add(
        p,
        "--checkpoints",
        "evenly spaced checkpoints of each distillation to score (FD against iterations)",
        default=1,
    )
    add(p, "--n-samples", "samples per model, and held-out reference images", default=2000)
    add(p, "--data", "the MNIST .npz of the teacher trained here (default: the config's)")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/sid")
    add(p, "--plot", "also draw FD against distillation iterations as a PNG figure here")
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


def segment_sets(args, k: int, segment: int) -> list[str]:
    """``--set`` items of segment ``segment`` (1-based) of the ``k``-step distillation: a
    ``1 / --checkpoints`` share of ``--train-minutes``, or training on to that share of
    ``--train-steps`` (rounded up); then the user's ``--set``."""
    n = args.checkpoints
    if args.train_steps is None:
        budget = [f"train.max_minutes={args.train_minutes / n}", "train.steps=10000000"]
    else:
        budget = [f"train.steps={math.ceil(args.train_steps * segment / n)}"]
        budget.append("train.max_minutes=null")
    return [*DISTILL_SETS, *budget, "train.tensorboard=false", f"distill.steps={k}", *args.set]


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


def distill_segment(cfg, run_dir: Path, segment: int, device=None) -> dict:
    """Segment ``segment`` (1-based) of a distillation into ``run_dir``: train with ``cfg``
    (resuming segment ``segment - 1``), or reuse it from an earlier call with the same config.
    Returns its iterations, images and distillation minutes so far (from the checkpoint),
    the checkpoint, and the scores an earlier call kept (``scores``, if any)."""
    from nudiff.config import dump_config
    from nudiff.distill.run import distill
    from nudiff.training.checkpoint import load_checkpoint

    summary, text = run_dir / f"segment_{segment}.json", dump_config(cfg)
    if summary.is_file():
        kept = json.loads(summary.read_text())
        if kept.get("config") != text:
            raise ValueError(f"{run_dir} holds a run distilled with another config; delete it")
        print(f"   reusing {summary}; delete {run_dir} to retrain", flush=True)
        return kept
    out = distill(cfg, run_dir, resume=segment > 1, device=device)
    state = load_checkpoint(out["checkpoint"]).state
    kept = {
        "iterations": state["step"],
        "images_seen": state["images_seen"],
        "distill_minutes": state["elapsed"] / 60,
        "images_per_s": out["images_per_s"],
        "checkpoint": str(out["checkpoint"]),
        "config": text,
    }
    summary.write_text(json.dumps(kept))
    return kept


def model_name(k: int) -> str:
    """A generator's row and folder name: ``sid`` (one step), ``sid_k2``, ..."""
    return "sid" if k == 1 else f"sid_k{k}"


def score_distillation(args, teacher, k: int, out: Path, net, f_ref, device) -> list[dict]:
    """Distil the ``k``-step generator segment by segment, scoring each segment's checkpoint:
    its curve rows (the last one is the finished distillation's, with its NFE and timing)."""
    from nudiff.distill.run import distill_config

    run_dir, curve = out / model_name(k), []
    for i in range(1, args.checkpoints + 1):
        cfg = distill_config(teacher, segment_sets(args, k, i))
        print(f"== SiD k={k}: segment {i}/{args.checkpoints} into {run_dir}", flush=True)
        seg = distill_segment(cfg, run_dir, i, device)
        scored = seg.get("scores")
        if scored is None or scored["n"] != args.n_samples:
            grid = out / f"{model_name(k)}_samples.png" if i == args.checkpoints else None
            scored = sample_and_score(
                seg["checkpoint"], args.n_samples, net, f_ref, args.seed, grid, device
            )
            (run_dir / f"segment_{i}.json").write_text(json.dumps({**seg, "scores": scored}))
        row = {"k": k, "checkpoint": i, **{key: seg[key] for key in CURVE_KEYS}}
        curve.append({**row, **{key: scored[key] for key in SCORE_KEYS}})
        print(
            f"   k={k} @ {seg['iterations']} iterations: FD {scored['fd']:.2f} +- "
            f"{scored['fd_se']:.2f}",
            flush=True,
        )
    curve[-1]["timing"] = {key: scored[key] for key in ("nfe", "ms_per_sample")}
    return curve


CURVE_KEYS = ("iterations", "images_seen", "distill_minutes")
SCORE_KEYS = ("fd", "fd_se", "kid")


def plot(result: dict, path) -> None:
    """FD against distillation iterations, one line per ``k``, the teacher's FD dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k in result["distill_steps"]:
        rs = [r for r in result["curve"] if r["k"] == k]
        ax.errorbar(
            [r["iterations"] for r in rs],
            [r["fd"] for r in rs],
            yerr=[r["fd_se"] for r in rs],
            marker="o",
            capsize=3,
            label=f"SiD, {k} step{'s' * (k > 1)}",
        )
    teacher = result["rows"][0]
    ax.axhline(teacher["fd"], color="k", ls="--", lw=1, label=f"teacher ({teacher['nfe']} NFE)")
    ax.set_xlabel("distillation iterations")
    ax.set_ylabel("feature FD (held-out)")
    ax.set_yscale("log")
    ax.set_title(f"SiD on MNIST, n = {result['n_samples']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check(args) -> None:
    if args.checkpoints < 1 or any(k < 1 for k in args.steps):
        raise ValueError("--checkpoints and every --steps value must be >= 1")
    if args.train_steps is None and args.train_minutes <= 0:
        raise ValueError("--train-minutes must be > 0")
    if args.train_steps is not None and args.train_steps < args.checkpoints:
        raise ValueError("--train-steps must be at least --checkpoints")
    args.set = list(args.set or [])


def _teacher(args, out: Path, device):
    """The teacher's run folder, its config and its training summary (None: given)."""
    from nudiff.run import load_run

    if args.teacher:
        teacher = Path(args.teacher)
        tcfg, _ = load_run(teacher, device="cpu")  # its config
        return teacher, tcfg, None
    teacher = out / "teacher"
    minutes = args.teacher_train_minutes
    tcfg = budget_config(TEACHER, minutes, args.data, args.teacher_set)
    print(f"== teacher: training {minutes:g} min into {teacher}", flush=True)
    return teacher, tcfg, train_or_reuse(tcfg, teacher, device)


def run(args) -> dict:
    from nudiff.devices import resolve_device

    _check(args)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher, tcfg, taught = _teacher(args, out, device)
    net, feature_info = bench_feature_net(tcfg, args, out, device)
    f_ref, floor = held_out_reference(tcfg, net, args.n_samples)
    result = {
        "benchmark": "sid",
        "environment": environment(device),
        "teacher": str(teacher),
        "teacher_training": taught and {k: taught[k] for k in ("steps", "seconds")},
        "distill_steps": list(args.steps),
        "checkpoints": args.checkpoints,
        "budget": {"train_minutes": args.train_minutes, "train_steps": args.train_steps},
        "distill_settings": segment_sets(args, args.steps[0], 1),
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
        "curve": [],
    }
    grid = out / "teacher_samples.png"
    scored = sample_and_score(teacher, args.n_samples, net, f_ref, args.seed, grid, device)
    t = {"model": "teacher", "k": None, "iterations": 0, "distill_minutes": 0.0, **scored}
    result["rows"].append(t)
    print(f"teacher: {t['nfe']} NFE, FD {t['fd']:.2f} +- {t['fd_se']:.2f}", flush=True)
    for k in args.steps:
        curve = score_distillation(args, teacher, k, out, net, f_ref, device)
        result["curve"] += curve
        last = curve[-1]
        row = {"model": model_name(k), **{key: v for key, v in last.items() if key != "timing"}}
        row.update(last["timing"])
        row.update(fd_ratio=row["fd"] / t["fd"], speedup=t["ms_per_sample"] / row["ms_per_sample"])
        del row["checkpoint"]
        result["rows"].append(row)
        print(
            f"{row['model']}: {row['nfe']} NFE, FD {row['fd']:.2f} +- {row['fd_se']:.2f}, "
            f"{row['ms_per_sample']:.2f} ms/sample",
            flush=True,
        )
    g = result["rows"][1]
    met = g["fd_ratio"] <= 1.5 and g["speedup"] >= 15
    result["comparison"] = {"fd_ratio": g["fd_ratio"], "speedup": g["speedup"], "target_met": met}
    print(f"k={g['k']}: FD ratio {g['fd_ratio']:.2f}, speed-up {g['speedup']:.1f}x, met: {met}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    write_json(result, args.json)
    return result
