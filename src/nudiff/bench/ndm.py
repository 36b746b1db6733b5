"""Neural Diffusion Models: a learned transform vs the fixed (identity) one on MNIST 32x32.

Trains the packaged ``mnist32_ndm_fixed.yaml`` (F = identity) and ``mnist32_ndm.yaml``
(learned F; ``--transforms``) through the normal trainer with the same denoiser, objective (the
continuous NDM bound) and budget: ``--train-steps N`` steps (default 600) or ``--train-minutes
M`` each, or reuses the runs under ``--out``. Each EMA model is then scored on MNIST's held-out
images (the tail of the train split, never trained on):

* ``nelbo_bpd``: the NDM bound in bits/dim on ``--n-elbo`` images, ``--times`` draws of t per
  image (standard error over images);
* ``ode_bpd``: the PF-ODE NLL on ``--n-ode`` images (dopri5 at ``--ode-tolerance``, Hutchinson
  with one Rademacher probe);
* ``fd``: feature Frechet distance of ``--n-samples`` samples (``--sampler``, ``--steps``)
  against as many held-out images, in the feature space of ``--features`` (or a network the
  bench trains on the non-held-out images for ``--feature-train-steps`` and caches under
  ``--out``).

Writes ``--json`` with rows ``transform, steps, train_minutes, nelbo_bpd, ode_bpd, fd`` (with
standard errors, counts and timings).
"""

from __future__ import annotations

import time
from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    environment,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

CONFIGS = {
    "identity": str(CONFIG_DIR / "mnist32_ndm_fixed.yaml"),
    "learned": str(CONFIG_DIR / "mnist32_ndm.yaml"),
}
SAMPLERS = ("ddim", "ancestral", "dopri5")  # the samplers with an NDM version


def add_arguments(p) -> None:
    budget = p.add_mutually_exclusive_group()
    add(budget, "--train-steps", "optimiser steps of training per model (default: 600)")
    add(budget, "--train-minutes", "wall-clock minutes of training per model, instead of steps")
    deprecated(p, "--budget-steps", "--train-steps")
    deprecated(p, "--budget-minutes", "--train-minutes")
    transforms = f"NDM transforms to train and score: {', '.join(CONFIGS)}"
    add(p, "--transforms", transforms, many=True, default=list(CONFIGS))
    add(p, "--n-elbo", default=1000)
    deprecated(p, "--n-nelbo", "--n-elbo")
    add(p, "--times", "draws of t per image of the bound", default=4)
    deprecated(p, "--nelbo-times", "--times")
    add(p, "--n-ode", default=256)
    add(p, "--ode-tolerance", default=1e-4)
    deprecated(p, "--ode-tol", "--ode-tolerance")
    add(p, "--n-samples", "samples for the feature FD, and held-out reference images", default=2000)
    deprecated(p, "--n-fd", "--n-samples")
    add(p, "--sampler", default="ddim", choices=SAMPLERS)
    add(p, "--steps", default=50)
    deprecated(p, "--sample-steps", "--steps")
    add(p, "--batch-size", "images per batch of the bound and the ODE NLL", default=128)
    add_feature_options(p)
    add(p, "--data", "replaces data.path of both configs (default: theirs)")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/ndm")
    add(p, "--set", "override a key of both configs (repeatable)")


def config_for(args, transform: str):
    from nudiff.config import load_config

    if args.train_minutes is not None and args.train_steps is not None:
        raise ValueError("give --train-steps or --train-minutes, not both")
    if args.train_minutes is not None:
        budget = [f"train.max_minutes={args.train_minutes}", "train.steps=10000000"]
    else:
        steps = args.train_steps if args.train_steps is not None else 600
        budget = [f"train.steps={steps}", "train.max_minutes=null"]
    sets = [
        *budget,
        "train.sample_every=0",
        "train.tensorboard=false",
        f"train.seed={args.seed}",
        *([f"data.path={args.data}"] if args.data else []),
        *(args.set or []),
    ]
    return load_config(CONFIGS[transform], sets)


def score(args, cfg, run_dir: Path, net, f_ref, device="auto") -> dict:
    from nudiff.eval.commands import _eval_images
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run, sample_model

    _, model = load_run(run_dir, device=device)
    n_eval = max(args.n_elbo, args.n_ode)
    images = _eval_images(cfg, None, n_eval)
    out = {"parameters": sum(p.numel() for p in model.parameters())}
    bs = args.batch_size
    if args.n_elbo:
        b = nll_bpd(
            model, model.process, images[-args.n_elbo :], batch_size=bs, seed=args.seed,
            method="elbo", n_times=args.times,
        )  # fmt: skip
        out.update(nelbo_bpd=b["nll_bpd"], nelbo_se=b["stderr"], n_nelbo=b["n"])
        out.update(nelbo_seconds=b["seconds"])
        print(f"   nelbo {b['nll_bpd']:.4f} +- {b['stderr']:.4f} bits/dim", flush=True)
    if args.n_ode:
        o = nll_bpd(
            model, model.process, images[-args.n_ode :], batch_size=bs, seed=args.seed,
            method="ode", divergence="hutchinson", rtol=args.ode_tolerance,
            atol=args.ode_tolerance,
        )  # fmt: skip
        out.update(ode_bpd=o["nll_bpd"], ode_se=o["stderr"], n_ode=o["n"])
        out.update(ode_nfe=o["nfe_mean"], ode_seconds=o["seconds"])
        print(f"   ode {o['nll_bpd']:.4f} +- {o['stderr']:.4f} bits/dim", flush=True)
    if args.n_samples:
        began = time.perf_counter()
        samples = sample_model(
            cfg, model, args.n_samples, sampler=args.sampler, steps=args.steps,
            seed=args.seed, batch_size=250,
        )  # fmt: skip
        png = run_dir.parent / f"{run_dir.name}_samples.png"
        s = score_samples(samples, net, f_ref, args.seed, png)
        out.update(fd=s["fd"], fd_se=s["fd_se"], kid=s["kid"], n_fd=s["n"], nfe=s["nfe"])
        out.update(fd_seconds=time.perf_counter() - began)
        print(f"   fd {s['fd']:.3f} +- {s['fd_se']:.3f}", flush=True)
    return out


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    names = [n.strip() for n in args.transforms if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        raise ValueError(
            f"--transforms takes names from {sorted(CONFIGS)}, got {','.join(args.transforms)}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {name: config_for(args, name) for name in names}
    cfg = next(iter(cfgs.values()))
    net = f_ref = floor = None
    feature_info = None
    if args.n_samples:
        net, feature_info = bench_feature_net(cfg, args, out, device)
        f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    result = {
        "benchmark": "ndm",
        "environment": environment(device),
        "budget_steps": None if args.train_minutes is not None else cfg.train.steps,
        "budget_minutes": args.train_minutes,
        "batch_size": cfg.train.batch_size,
        "nelbo_times": args.times,
        "ode_tol": args.ode_tolerance,
        "sampler": args.sampler,
        "sample_steps": args.steps,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name in names:
        run_dir = out / name
        print(f"== {name}: training into {run_dir}", flush=True)
        trained = train_or_reuse(cfgs[name], run_dir, device)
        row = {
            "transform": name,
            "steps": trained["steps"],
            "train_minutes": trained["seconds"] / 60,
            "final_loss": trained["final_loss"],
            **score(args, cfgs[name], run_dir, net, f_ref, device),
        }
        result["rows"].append(row)
        write_json(result, args.json)  # partial results survive an interrupted run
    rows = {r["transform"]: r for r in result["rows"]}
    if {"identity", "learned"} <= set(rows) and args.n_ode:
        a, b = rows["identity"], rows["learned"]
        result["learned_minus_fixed"] = {
            k: b[k] - a[k] for k in ("nelbo_bpd", "ode_bpd", "fd") if k in a and k in b
        }
    for r in result["rows"]:
        print(
            "   " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in r.items()),
            flush=True,
        )  # fmt: skip
    write_json(result, args.json)
    return result
