"""CDE vs CMDE at equal training budgets: PSNR, SSIM, consistency and diversity.

For each task (CIFAR-10 x2 super-resolution, ``configs/cifar10_sr2.yaml``; MNIST inpainting of a
centred box covering 25%, ``configs/mnist32_inpaint.yaml``) and each estimator, trains one model
for ``--budget-minutes`` of wall-clock (one after the other), then conditions it on the degraded
held-out images (the last ``--n-eval`` of the training split, which the configs hold out) and
draws ``--per-input`` samples for each. Reports, per estimator and task: PSNR and SSIM of every
sample against its ground truth (mean and standard error), the consistency MSE of the degraded
sample against its condition, and the diversity (mean pixel std across one input's samples).

Run it with nothing else on the machine: the budget is wall-clock.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "sr2": ROOT / "configs" / "cifar10_sr2.yaml",
    "inpaint-center": ROOT / "configs" / "mnist32_inpaint.yaml",
}


def add_arguments(p) -> None:
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training per model")
    p.add_argument("--estimators", default="cde,cmde")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--n-eval", type=int, default=200, help="held-out inputs per task")
    p.add_argument("--per-input", type=int, default=4, help="samples per input (>= 2)")
    p.add_argument("--out", default="runs/conditional")
    p.add_argument("--set", action="append", default=[], help="override for every config")
    p.add_argument("--seed", type=int, default=0)


def evaluate(run_dir: Path, n_eval: int, per_input: int, seed: int) -> dict:
    import torch

    from nudiff.build import build_data
    from nudiff.conditional import diversity, psnr, ssim
    from nudiff.conditional.inputs import comparison_grid
    from nudiff.conditional.metrics import mean_and_stderr
    from nudiff.data import load_batch, save_image_grid
    from nudiff.run import load_run, sample_conditional, sample_settings

    cfg, model = load_run(run_dir)
    held_out = build_data(cfg, split="holdout")
    if n_eval > len(held_out):
        raise ValueError(f"--n-eval {n_eval} exceeds the {len(held_out)} held-out images")
    truth = load_batch(held_out, list(range(len(held_out) - n_eval, len(held_out))))
    y = model.task.degrade(truth, torch.arange(n_eval))
    began = time.perf_counter()
    out = sample_conditional(model, y, per_input, seed=seed, progress=True, **sample_settings(cfg))
    seconds = time.perf_counter() - began
    samples = out.images.clamp(-1, 1).view(n_eval, per_input, *truth.shape[1:])
    flat_truth = truth.repeat_interleave(per_input, 0)
    flat = samples.flatten(0, 1)
    grid, per_row = comparison_grid(model.task, y[:8], samples[:8], truth[:8])
    save_image_grid(grid, run_dir / "comparison.png", nrow=per_row)
    p_mean, p_err = mean_and_stderr(psnr(flat, flat_truth))
    s_mean, s_err = mean_and_stderr(ssim(flat, flat_truth))
    c_mean, _ = mean_and_stderr(model.task.consistency(flat, y.repeat_interleave(per_input, 0)))
    d_mean, _ = mean_and_stderr(diversity(samples))
    return {
        "psnr": p_mean,
        "psnr_stderr": p_err,
        "ssim": s_mean,
        "ssim_stderr": s_err,
        "consistency": c_mean,
        "diversity": d_mean,
        "n_inputs": n_eval,
        "n_samples": n_eval * per_input,
        "nfe": out.nfe,
        "sampling_s_per_sample": seconds / (n_eval * per_input),
    }


def run(args) -> dict:
    from benchmarks.common import environment, train_or_reuse, write_json
    from nudiff.config import dump_config, load_config

    if args.per_input < 2:
        raise ValueError("--per-input must be >= 2 (diversity needs two samples per input)")
    out = Path(args.out)
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; known: {', '.join(TASKS)}")
        for estimator in [e for e in args.estimators.split(",") if e]:
            cfg = load_config(
                TASKS[task],
                [
                    f"conditional.estimator={estimator}",
                    f"train.max_minutes={args.budget_minutes}",
                    "train.steps=10000000",
                    "train.tensorboard=false",
                    *args.set,
                ],
            )
            run_dir = out / f"{task}_{estimator}"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "bench_config.yaml").write_text(dump_config(cfg))
            print(f"== {task} / {estimator}: {args.budget_minutes} min", flush=True)
            trained = train_or_reuse(cfg, run_dir)
            metrics = evaluate(run_dir, args.n_eval, args.per_input, args.seed)
            rows.append(
                {
                    "estimator": estimator,
                    "task": task,
                    **metrics,
                    "train_steps": trained["steps"],
                    "budget_minutes": args.budget_minutes,
                }
            )
            _print(rows[-1])
    result = {"benchmark": "conditional", "environment": environment(), "rows": rows}
    write_json(result, args.json)
    return result


def _print(r: dict) -> None:
    print(
        f"{r['task']:<15} {r['estimator']:<8} PSNR {r['psnr']:.2f} +- {r['psnr_stderr']:.2f} dB, "
        f"SSIM {r['ssim']:.3f}, consistency {r['consistency']:.2e}, diversity "
        f"{r['diversity']:.3f} (n = {r['n_samples']}, {r['train_steps']} steps)",
        flush=True,
    )
