"""Neural Diffusion Models: a learned transform vs the fixed (identity) one on MNIST 32x32.

Trains ``configs/mnist32_ndm_fixed.yaml`` (F = identity) and ``configs/mnist32_ndm.yaml``
(learned F) through the normal trainer with the same denoiser, objective (the continuous NDM
bound) and budget: ``--budget-steps N`` steps (default 600) or ``--budget-minutes M`` each, or
reuses the runs under ``--out``. Each EMA model is then scored on MNIST's held-out images (the
tail of the train split, never trained on):

* ``nelbo_bpd``: the NDM bound in bits/dim on ``--n-nelbo`` images, ``--nelbo-times`` draws
  of t per image (standard error over images);
* ``ode_bpd``: the PF-ODE NLL on ``--n-ode`` images (dopri5 at ``--ode-tol``, Hutchinson with
  one Rademacher probe);
* ``fd``: feature Frechet distance of ``--n-fd`` samples (``--sampler``, ``--sample-steps``)
  against as many held-out images, in the feature space of ``--features`` (or a network the
  bench trains on the non-held-out images and caches under ``--out``).

Writes ``--json`` with rows ``transform, steps, train_minutes, nelbo_bpd, ode_bpd, fd`` (with
standard errors, counts and timings).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import (
    environment,
    feature_net,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "identity": ROOT / "configs" / "mnist32_ndm_fixed.yaml",
    "learned": ROOT / "configs" / "mnist32_ndm.yaml",
}


def add_arguments(p) -> None:
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-steps", type=int, default=None, help="steps per model (600)")
    budget.add_argument("--budget-minutes", type=float, default=None, help="minutes per model")
    p.add_argument("--transforms", default="identity,learned")
    p.add_argument("--n-nelbo", type=int, default=1000, help="held-out images for the bound")
    p.add_argument("--nelbo-times", type=int, default=4, help="t draws per image (bound)")
    p.add_argument("--n-ode", type=int, default=256, help="held-out images for the ODE NLL")
    p.add_argument("--ode-tol", type=float, default=1e-4, help="dopri5 rtol = atol")
    p.add_argument("--n-fd", type=int, default=2000, help="samples for the feature FD")
    p.add_argument("--sampler", default="ddim", help="ddim, ancestral or dopri5")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128, help="evaluation batch")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--data", default=None, help="replaces data.path (default: the configs')")
    p.add_argument("--out", default="runs/ndm")
    p.add_argument("--set", action="append", default=[], help="override a config key")
    p.add_argument("--seed", type=int, default=0)


def config_for(args, transform: str):
    from nudiff.config import load_config

    if args.budget_minutes is not None:
        budget = [f"train.max_minutes={args.budget_minutes}", "train.steps=10000000"]
    else:
        steps = args.budget_steps if args.budget_steps is not None else 600
        budget = [f"train.steps={steps}", "train.max_minutes=null"]
    sets = [
        *budget,
        "train.sample_every=0",
        "train.tensorboard=false",
        f"train.seed={args.seed}",
        *([f"data.path={args.data}"] if args.data else []),
        *args.set,
    ]
    return load_config(CONFIGS[transform], sets)


def score(args, cfg, run_dir: Path, net, f_ref) -> dict:
    from nudiff.eval.commands import _eval_images
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run, sample_model

    _, model = load_run(run_dir)
    n_eval = max(args.n_nelbo, args.n_ode)
    images = _eval_images(cfg, None, n_eval)
    out = {"parameters": sum(p.numel() for p in model.parameters())}
    bs = args.batch_size
    if args.n_nelbo:
        b = nll_bpd(
            model, model.process, images[-args.n_nelbo :], batch_size=bs, seed=args.seed,
            method="elbo", n_times=args.nelbo_times,
        )  # fmt: skip
        out.update(nelbo_bpd=b["nll_bpd"], nelbo_se=b["stderr"], n_nelbo=b["n"])
        out.update(nelbo_seconds=b["seconds"])
        print(f"   nelbo {b['nll_bpd']:.4f} +- {b['stderr']:.4f} bits/dim", flush=True)
    if args.n_ode:
        o = nll_bpd(
            model, model.process, images[-args.n_ode :], batch_size=bs, seed=args.seed,
            method="ode", divergence="hutchinson", rtol=args.ode_tol, atol=args.ode_tol,
        )  # fmt: skip
        out.update(ode_bpd=o["nll_bpd"], ode_se=o["stderr"], n_ode=o["n"])
        out.update(ode_nfe=o["nfe_mean"], ode_seconds=o["seconds"])
        print(f"   ode {o['nll_bpd']:.4f} +- {o['stderr']:.4f} bits/dim", flush=True)
    if args.n_fd:
        began = time.perf_counter()
        samples = sample_model(
            cfg, model, args.n_fd, sampler=args.sampler, steps=args.sample_steps,
            seed=args.seed, batch_size=250,
        )  # fmt: skip
        png = run_dir.parent / f"{run_dir.name}_samples.png"
        s = score_samples(samples, net, f_ref, args.seed, png)
        out.update(fd=s["fd"], fd_se=s["fd_se"], kid=s["kid"], n_fd=s["n"], nfe=s["nfe"])
        out.update(fd_seconds=time.perf_counter() - began)
        print(f"   fd {s['fd']:.3f} +- {s['fd_se']:.3f}", flush=True)
    return out


def run(args) -> dict:
    from nudiff.eval.features import load_feature_net

    names = [n.strip() for n in args.transforms.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        raise ValueError(f"--transforms takes names from {sorted(CONFIGS)}, got {args.transforms}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {name: config_for(args, name) for name in names}
    cfg = next(iter(cfgs.values()))
    net = f_ref = floor = None
    feature_info = None
    if args.n_fd:
        features, feature_info = feature_net(
            cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
        )
        net = load_feature_net(features)
        f_ref, floor = held_out_reference(cfg, net, args.n_fd)
    result = {
        "benchmark": "ndm",
        "environment": environment(),
        "budget_steps": None if args.budget_minutes is not None else cfg.train.steps,
        "budget_minutes": args.budget_minutes,
        "batch_size": cfg.train.batch_size,
        "nelbo_times": args.nelbo_times,
        "ode_tol": args.ode_tol,
        "sampler": args.sampler,
        "sample_steps": args.sample_steps,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name in names:
        run_dir = out / name
        print(f"== {name}: training into {run_dir}", flush=True)
        trained = train_or_reuse(cfgs[name], run_dir)
        row = {
            "transform": name,
            "steps": trained["steps"],
            "train_minutes": trained["seconds"] / 60,
            "final_loss": trained["final_loss"],
            **score(args, cfgs[name], run_dir, net, f_ref),
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
