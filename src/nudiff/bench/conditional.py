"""CDE vs CMDE at equal training budgets: PSNR, SSIM, consistency, diversity, feature FD, LPIPS.

For each of ``--tasks`` (``sr2``: CIFAR-10 x2 super-resolution, the packaged
``cifar10_sr2.yaml``; ``sr2-multiscale``: the same with a multi-scale model,
``cifar10_sr2_multiscale.yaml``; ``inpaint-center``: MNIST inpainting of a centred box covering
25%, ``mnist32_inpaint.yaml``; ``colorization``: CIFAR-10 from grey,
``cifar10_colorization.yaml``) and each of ``--estimators``, trains one model for ``--train-
minutes`` of wall-clock or ``--train-steps`` steps (one after the other), then conditions it on
the degraded held-out images (the last ``--n-images`` of the training split, which the configs
hold out) and draws ``--per-input`` samples for each. Reports, per estimator and task: PSNR and
SSIM of every sample against its ground truth (mean and standard error), the consistency MSE of
the degraded sample against its condition, the diversity (mean pixel std across one input's
samples), the Frechet distance of the samples to the ground truths in the features of an offline
network trained on the task's other images for ``--feature-train-steps`` (beside it, the
distance of as many unpaired held-out images to the same truths: what an unconditional model
that matched the data exactly would score), and LPIPS when its weights are on the machine
(``--lpips``). A ``naive`` row gives the classical reconstruction from the condition alone
(bilinear upsampling, mean filling, the grey image as RGB), and each model's sampling time per
sample. First, the same estimators sample with *exact* scores (a Gaussian field, x2 super-
resolution, at one scale and through the multi-scale path): what the joint estimators' sampling
approximation costs by itself, apart from learning. Rows carry the conditional ``task`` and the
``model`` (``single-scale`` or ``multi-scale``); tasks that share a conditional task share its
held-out inputs, naive row and feature network.

A wall-clock budget needs nothing else running on the machine; a step budget is fair anywhere.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from nudiff.bench.common import add_feature_options
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

TASKS = {
    "sr2": str(CONFIG_DIR / "cifar10_sr2.yaml"),
    "sr2-multiscale": str(CONFIG_DIR / "cifar10_sr2_multiscale.yaml"),
    "inpaint-center": str(CONFIG_DIR / "mnist32_inpaint.yaml"),
    "colorization": str(CONFIG_DIR / "cifar10_colorization.yaml"),
}
# nudiff.conditional.estimators.ESTIMATORS (that module imports torch)
ESTIMATORS = ("cde", "cdiffe", "cmde", "vs-cmde")


def add_arguments(p) -> None:
    add(p, "--train-minutes", default=15.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(
        p,
        "--train-steps",
        "training steps per model instead of minutes (equal budgets on a busy machine; 0: "
        "--train-minutes)",
        default=0,
    )
    deprecated(p, "--budget-steps", "--train-steps")
    estimators = f"conditional estimators to train and score: {', '.join(ESTIMATORS)}"
    add(p, "--estimators", estimators, many=True, default=["cde", "cmde"])
    add(p, "--tasks", f"conditional tasks: {', '.join(TASKS)}", many=True, default=list(TASKS))
    add(p, "--n-images", "held-out inputs per task (the last N)", default=500)
    deprecated(p, "--n-eval", "--n-images")
    add(p, "--per-input", "samples per input (>= 2)", default=4)
    add(p, "--out", "folder of the runs and feature networks", default="runs/conditional")
    add_feature_options(p, features=False)
    add(p, "--lpips", default=None)
    add(p, "--set", "override a key of every config (repeatable)")


class Scorer:
    """Scores samples ``(N, K, C, H, W)`` of ``N`` inputs against their truths ``(N, C, H, W)``."""

    def __init__(self, task, truth, y, other, features: Path, lpips_model, device="cpu"):
        from nudiff.eval.features import load_feature_net

        self.task, self.truth, self.y, self.lpips = task, truth, y, lpips_model
        self.net = load_feature_net(features).to(device)
        self.ref = self._stats(truth)
        self.unpaired = self._fd(other)

    def _stats(self, images):
        from nudiff.data.transforms import float_to_uint8
        from nudiff.eval.commands import fit_images
        from nudiff.eval.features import extract_features
        from nudiff.eval.frechet import gaussian_stats

        shape = (self.net.in_channels, self.net.resolution, self.net.resolution)
        return gaussian_stats(extract_features(self.net, fit_images(float_to_uint8(images), shape)))

    def _fd(self, images) -> float:
        from nudiff.eval.frechet import frechet_distance

        return frechet_distance(*self._stats(images), *self.ref)

    def __call__(self, samples) -> dict:
        from nudiff.conditional import restoration_metrics

        out = restoration_metrics(self.task, samples, self.truth, self.y, self.lpips)
        return {**out, "fd": self._fd(samples.flatten(0, 1)), "fd_unpaired": self.unpaired}


def oracle_rows(estimators, sampler: str, steps: int, seed: int) -> list[dict]:
    """The sampling approximation alone: PSNR and consistency of each estimator with *exact*
    scores (:class:`~nudiff.conditional.oracle.GaussianSROracle`, x2 super-resolution of an 8x8
    Gaussian field, 64 inputs x 32 samples; and :func:`~nudiff.conditional.oracle.
    multiscale_sr_oracle`, the same field on a multi-speed schedule sampled coarse to fine) and
    the benchmark's sampler; on the CPU (a float64 problem this small gains nothing on an
    accelerator, and MPS has no float64)."""
    import torch

    from nudiff.conditional import restoration_metrics
    from nudiff.conditional.oracle import GaussianSROracle, multiscale_sr_oracle
    from nudiff.run import sample_conditional

    rows = []
    models = [("single-scale", GaussianSROracle), ("multi-scale", multiscale_sr_oracle)]
    for (kind, make), estimator in itertools.product(models, estimators):
        if kind == "multi-scale" and estimator == "cdiffe":
            continue  # cdiffe needs a scalar schedule
        model = make(estimator)
        data = model.scales[0].data if kind == "multi-scale" else model.data
        x = data.sample(64, torch.Generator().manual_seed(seed), dtype=torch.float64)
        y = model.task.degrade(x)
        out = sample_conditional(
            model, y, 32, sampler=sampler, steps=steps, seed=seed, dtype=torch.float64
        )
        m = restoration_metrics(model.task, out.images.view(64, 32, *x.shape[1:]), x, y)
        rows.append({"estimator": estimator, "model": kind, **m, "y_var": float(y.var())})
    return rows


def _held_out(cfg, n_eval: int):
    """``(truth, other)``: the last ``n_eval`` held-out images and, for the unpaired FD, the
    ``n_eval`` before them (or as many as there are)."""
    from nudiff.build import build_data
    from nudiff.data import load_batch

    held_out = build_data(cfg, split="holdout")
    if n_eval > len(held_out):
        raise ValueError(f"--n-images {n_eval} exceeds the {len(held_out)} held-out images")
    n = len(held_out)
    truth = load_batch(held_out, list(range(n - n_eval, n)))
    other = load_batch(held_out, list(range(max(0, n - 2 * n_eval), n - n_eval)))
    return truth, other


def evaluate(run_dir: Path, scorer: Scorer, per_input: int, seed: int, device="auto") -> dict:
    from nudiff.conditional.inputs import comparison_grid
    from nudiff.data import save_image_grid
    from nudiff.families.gaussian import sample_settings
    from nudiff.run import load_run, sample_conditional

    cfg, model = load_run(run_dir, device=device)
    truth, y = scorer.truth, scorer.y
    began = time.perf_counter()
    out = sample_conditional(model, y, per_input, seed=seed, progress=True, **sample_settings(cfg))
    seconds = time.perf_counter() - began
    # the metrics run on the CPU, beside the truths and conditions
    samples = out.images.clamp(-1, 1).cpu().view(len(truth), per_input, *truth.shape[1:])
    grid, per_row = comparison_grid(model.task, y[:8], samples[:8], truth[:8])
    save_image_grid(grid, run_dir / "comparison.png", nrow=per_row)
    return {
        **scorer(samples),
        "nfe": out.nfe,
        "sampling_s_per_sample": seconds / samples.shape[:2].numel(),
    }


def run(args) -> dict:
    import torch

    from nudiff.bench.common import environment, feature_net, train_or_reuse, write_json
    from nudiff.conditional.build import build_task
    from nudiff.config import dump_config, load_config
    from nudiff.devices import resolve_device
    from nudiff.eval.lpips import lpips_or_none

    device = resolve_device(args.device)
    if args.per_input < 2:
        raise ValueError("--per-input must be >= 2 (diversity needs two samples per input)")
    tasks = list(args.tasks)
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; known: {', '.join(TASKS)}")
    if args.train_steps > 0:
        budget = [f"train.steps={args.train_steps}", "train.max_minutes=null"]
        what = f"{args.train_steps} steps"
    else:
        budget = [f"train.max_minutes={args.train_minutes}", "train.steps=10000000"]
        what = f"{args.train_minutes} min"
    lpips_model, why = lpips_or_none(args.lpips)
    if lpips_model is None:
        print(f"LPIPS not reported: {why}", flush=True)
    out = Path(args.out)
    result = {"benchmark": "conditional", "environment": environment(device), "budget": what}
    sampler = load_config(TASKS[tasks[0]], args.set or []).sample
    estimators = list(args.estimators)
    result["oracle"] = oracle_rows(estimators, sampler.sampler, sampler.steps, args.seed)
    for r in result["oracle"]:
        print(
            f"exact scores  {r['model']:<12} {r['estimator']:<6} PSNR {r['psnr']:.4f} dB, "
            f"consistency {r['consistency']:.2e} (var y {r['y_var']:.2f}; Gaussian field, "
            f"{sampler.sampler} {sampler.steps} steps)",
            flush=True,
        )
    rows = result["rows"] = []
    scorers = {}
    for key in tasks:
        base = load_config(TASKS[key], args.set or [])
        task = base.conditional.task
        kind = "single-scale" if base.model.multiscale is None else "multi-scale"
        if task not in scorers:  # held-out inputs, feature network and naive row per task
            truth, other = _held_out(base, args.n_images)
            model_task = build_task(base)
            y = model_task.degrade(truth, torch.arange(len(truth)))
            path = out / f"features_{task}.safetensors"
            features, info = feature_net(
                base, path, None, args.feature_train_steps, args.seed, device
            )
            result[f"feature_net_{task}"] = info
            scorers[task] = Scorer(model_task, truth, y, other, features, lpips_model, device)
            naive = scorers[task](model_task.naive(y)[:, None])
            rows.append({"estimator": "naive", "task": task, "model": "none", **naive})
            _print(rows[-1])
        scorer = scorers[task]
        for estimator in estimators:
            overrides = [f"conditional.estimator={estimator}", *budget, "train.tensorboard=false"]
            cfg = load_config(TASKS[task], [*overrides, *(args.set or [])])
            run_dir = out / f"{key}_{estimator}"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "bench_config.yaml").write_text(dump_config(cfg))
            print(f"== {key} / {estimator}: {what}", flush=True)
            trained = train_or_reuse(cfg, run_dir, device)
            metrics = evaluate(run_dir, scorer, args.per_input, args.seed, device)
            rows.append(
                {
                    "estimator": estimator,
                    "task": task,
                    "model": kind,
                    **metrics,
                    "train_steps": trained["steps"],
                    "train_minutes": trained["seconds"] / 60,
                }
            )
            _print(rows[-1])
    write_json(result, args.json)
    return result


def _print(r: dict) -> None:
    steps = f", {r['train_steps']} steps" if "train_steps" in r else ""
    lp = f", LPIPS {r['lpips']:.3f}" if r["lpips"] is not None else ""
    speed = ""
    if "sampling_s_per_sample" in r:
        speed = f", {1e3 * r['sampling_s_per_sample']:.1f} ms/sample ({r['nfe']} NFE)"
    print(
        f"{r['task']:<15} {r['model']:<12} {r['estimator']:<6} PSNR {r['psnr']:.2f} +- "
        f"{r['psnr_stderr']:.2f} dB, SSIM {r['ssim']:.3f}, consistency {r['consistency']:.2e}, "
        f"diversity {r['diversity']:.3f}, FD {r['fd']:.2f} (unpaired {r['fd_unpaired']:.2f})"
        f"{lp}{speed} "
        f"(n = {r['n_samples']}{steps})",
        flush=True,
    )
