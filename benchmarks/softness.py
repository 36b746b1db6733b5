"""GUD's softness sweep: one model over a range of softness, scored at each value.

Trains ``configs/mnist32_soft.yaml`` (soft conditioning in the ``--basis``, PCA with the
data-matched prior by default, ``loss.softness`` covering every ``--values``) for
``--budget-minutes``, or reuses the run, then for each softness: the variational bound
(``--n-elbo`` held-out images, ``--times`` denoiser calls each) and the PF-ODE NLL (``--n-ode``
held-out images, Hutchinson divergence) in bits/dim, and the Frechet distance (with its
bootstrap standard error) and KID of ``--n-samples`` samples against as many held-out images in
the offline feature network's space. Writes one grid per softness and ``--json``; rows
``basis, softness, elbo_bpd, ode_bpd, fd, n_samples``.

Run it with nothing else on the machine: the budget is wall-clock.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.common import (
    budget_config,
    check_holdout,
    environment,
    feature_net,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p) -> None:
    p.add_argument("--basis", default="pca", choices=["pca", "dct", "haar"])
    p.add_argument("--values", default="0.25,0.5,1,2,4,inf", help="softness values")
    p.add_argument("--budget-minutes", type=float, default=15.0)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--n-elbo", type=int, default=200)
    p.add_argument("--n-ode", type=int, default=50)
    p.add_argument("--times", type=int, default=64, help="ELBO denoiser calls per image")
    p.add_argument("--config", default=str(ROOT / "configs" / "mnist32_soft.yaml"))
    p.add_argument("--data", default=None, help="the MNIST .npz (default: the config's)")
    p.add_argument("--out", default="runs/softness")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override a config key")
    p.add_argument("--seed", type=int, default=0)


def parse_values(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--values takes numbers (or inf) separated by commas, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise ValueError(f"--values must be > 0, got {text!r}")
    return values


def run(args) -> dict:
    from nudiff.eval.commands import _eval_images
    from nudiff.eval.features import load_feature_net
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run, sample_model

    values = parse_values(args.values)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [
        f"process.basis.type={args.basis}",
        f"loss.softness={{min: {min(values)}, max: {max(values)}}}",
    ]
    cfg = budget_config(args.config, args.budget_minutes, args.data, args.set, extra)
    check_holdout(cfg, max(args.n_samples, args.n_elbo, args.n_ode))
    features, feature_info = feature_net(
        cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    run_dir = out / f"{args.basis}"
    print(f"== training {args.budget_minutes:g} min into {run_dir}", flush=True)
    trained = train_or_reuse(cfg, run_dir)
    images = _eval_images(cfg, None, max(args.n_elbo, args.n_ode))
    result = {
        "benchmark": "softness",
        "environment": environment(),
        "basis": args.basis,
        "budget_minutes": args.budget_minutes,
        "steps": trained["steps"],
        "train_seconds": trained["seconds"],
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for softness in values:
        run_cfg, model = load_run(run_dir, overrides=[f"process.schedule.softness={softness}"])
        process = model.process
        elbo = nll_bpd(
            model,
            process,
            images[-args.n_elbo :],
            method="elbo",
            n_times=args.times,
            seed=args.seed,
        )
        ode = nll_bpd(
            model,
            process,
            images[-args.n_ode :],
            method="ode",
            divergence="hutchinson",
            seed=args.seed,
        )
        samples = sample_model(run_cfg, model, args.n_samples, seed=args.seed, progress=True)
        tag = "inf" if math.isinf(softness) else f"{softness:g}"
        scored = score_samples(samples, net, f_ref, args.seed, out / f"softness_{tag}.png")
        row = {
            "basis": args.basis,
            "softness": softness,
            "elbo_bpd": elbo["nll_bpd"],
            "elbo_se": elbo["stderr"],
            "ode_bpd": ode["nll_bpd"],
            "ode_se": ode["stderr"],
            "n_elbo": elbo["n"],
            "n_ode": ode["n"],
            "n_samples": args.n_samples,
            **scored,
        }
        result["rows"].append(row)
        print(
            f"softness {tag}: ELBO {row['elbo_bpd']:.3f} +- {row['elbo_se']:.3f}, ODE "
            f"{row['ode_bpd']:.3f} +- {row['ode_se']:.3f} bits/dim, FD {row['fd']:.2f} +- "
            f"{row['fd_se']:.2f}",
            flush=True,
        )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
