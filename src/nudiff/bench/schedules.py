"""Noise processes at an equal training budget: models that differ only in their process.

Trains each of ``--configs`` (default: the packaged MNIST models that share one UNet recipe and
differ in basis and schedule: ``mnist32_uniform`` (pixels, VP cosine), ``mnist32_shifted``
(the resolution-shifted cosine of simple diffusion), ``mnist32_blurring`` (blurring diffusion in
the DCT basis) and ``mnist32_multiscale`` (MSDiff's multi-speed Haar bands)) one after the
other for ``--train-minutes`` of wall-clock, or ``--train-steps`` steps, then scores
``--n-samples`` samples of each (its config's sampler) against as many held-out images in the
feature space of the offline feature network: Frechet distance with its bootstrap standard
error, KID, NFE and sampling time per sample. The first config is the baseline: each row gives
its FD difference to it in standard errors. Writes the runs, one sample grid per config and
``--json``.

A wall-clock budget needs nothing else running on the machine; a step budget is fair anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

from nudiff.bench.common import add_feature_options
from nudiff.cli.vocabulary import add

CONFIGS = ["mnist32_uniform", "mnist32_shifted", "mnist32_blurring", "mnist32_multiscale"]


def add_arguments(p) -> None:
    add(p, "--configs", many=True, default=CONFIGS)
    add(p, "--train-minutes", default=10.0)
    steps = "training steps per model instead of minutes (0: --train-minutes)"
    add(p, "--train-steps", steps, default=0)
    add(p, "--n-samples", "samples per model, and held-out reference images", default=1000)
    add(p, "--data", "the .npz every config reads (default: theirs)")
    add(p, "--out", "folder of the runs and sample grids", default="runs/schedules")
    add_feature_options(p)
    add(p, "--set", "override a key of every config (repeatable)")


def _name(config: str) -> str:
    return Path(config).stem if config.endswith((".yaml", ".yml")) else config.replace("/", "_")


def _process(cfg) -> str:
    """The process in words: basis and schedule (with its parameters)."""
    s = cfg.process.schedule.model_dump(exclude={"type"}, exclude_none=True)
    shown = ["blur_sigma_max"]
    if s.get("shift_resolution"):  # the shift's parameters mean nothing without it
        shown += ["shift_resolution", "base_resolution", "interpolated"]
    keys = ", ".join(f"{k}={v}" for k, v in s.items() if k in shown and v)
    schedule = cfg.process.schedule.type + (f" ({keys})" if keys else "")
    return f"{cfg.process.basis.type} / {schedule}"


def run(args) -> dict:
    from nudiff.bench.common import (
        bench_feature_net,
        budget_config,
        environment,
        held_out_reference,
        sample_and_score,
        train_or_reuse,
        write_json,
    )
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    configs = list(args.configs)
    if len(set(map(_name, configs))) != len(configs):
        raise ValueError(f"--configs must name different configs, got {','.join(configs)}")
    steps = [f"train.steps={args.train_steps}", "train.max_minutes=null"]
    sets = [*(args.set or []), *(steps if args.train_steps > 0 else [])]
    cfgs = [budget_config(c, args.train_minutes, args.data, sets) for c in configs]
    if len({c.data.path for c in cfgs}) > 1:
        raise ValueError("the configs must read the same data (or pass --data)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, feature_info = bench_feature_net(cfgs[0], args, out, device)
    f_ref, floor = held_out_reference(cfgs[0], net, args.n_samples)
    budget = f"{args.train_steps} steps" if args.train_steps > 0 else f"{args.train_minutes} min"
    result = {
        "benchmark": "schedules",
        "environment": environment(device),
        "budget": budget,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for config, cfg in zip(configs, cfgs, strict=True):
        run_dir = out / _name(config)
        print(f"== {_name(config)} ({_process(cfg)}): {budget}", flush=True)
        trained = train_or_reuse(cfg, run_dir, device)
        grid = out / f"{_name(config)}_samples.png"
        scored = sample_and_score(run_dir, args.n_samples, net, f_ref, args.seed, grid, device)
        row = {"config": _name(config), "process": _process(cfg), **scored}
        row.update(train_steps=trained["steps"], train_minutes=trained["seconds"] / 60)
        row["images_per_s"] = trained["images_per_s"]
        base = result["rows"][0] if result["rows"] else row
        se = math.hypot(row["fd_se"], base["fd_se"])
        row["fd_vs_first_in_se"] = (row["fd"] - base["fd"]) / se if row is not base else 0.0
        result["rows"].append(row)
        print(
            f"{row['config']}: {row['train_steps']} steps, FD {row['fd']:.2f} +- "
            f"{row['fd_se']:.2f} ({row['fd_vs_first_in_se']:+.1f} se vs {configs[0]}), KID "
            f"{row['kid']:.3f}, {row['nfe']} NFE, {row['ms_per_sample']:.1f} ms/sample",
            flush=True,
        )
    write_json(result, args.json)
    return result
