"""GUD's softness sweep: one model over a range of softness, scored at each value.

Trains the packaged ``mnist32_soft.yaml`` (``--config``; soft conditioning in the ``--basis``,
PCA with the data-matched prior by default, ``loss.softness`` covering every ``--values``) for
``--train-minutes``, or reuses the run, then for each softness: the variational bound
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

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    check_holdout,
    environment,
    held_out_reference,
    numbers,
    score_samples,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR


def add_arguments(p) -> None:
    basis = "basis of the soft conditioning"
    add(p, "--basis", basis, default="pca", choices=["pca", "dct", "haar"])
    values = "softness values to score (numbers > 0, or inf)"
    add(p, "--values", values, many=True, default=[0.25, 0.5, 1, 2, 4, math.inf])
    add(p, "--train-minutes", default=15.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--n-samples", "samples per softness, and held-out reference images", default=2000)
    add(p, "--n-elbo", default=200)
    add(p, "--n-ode", default=50)
    add(p, "--times", default=64)
    add(p, "--config", default=str(CONFIG_DIR / "mnist32_soft.yaml"))
    add(p, "--data", "the MNIST .npz (default: the config's)")
    add(p, "--out", "folder of the run, sample grids and feature network", default="runs/softness")
    add_feature_options(p)
    add(p, "--set")


def parse_values(values) -> list[float]:
    """``--values`` (a list, or comma-separated text) as floats, checked to be > 0."""
    values = numbers(values, float, "--values")
    if not values or min(values) <= 0:
        raise ValueError(f"--values must be > 0, got {','.join(map(str, values))}")
    return values


def run(args) -> dict:
    from nudiff.devices import resolve_device
    from nudiff.eval.commands import _eval_images
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run, sample_model

    device = resolve_device(args.device)
    values = parse_values(args.values)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [
        f"process.basis.type={args.basis}",
        f"loss.softness={{min: {min(values)}, max: {max(values)}}}",
    ]
    cfg = budget_config(args.config, args.train_minutes, args.data, args.set, extra)
    check_holdout(cfg, max(args.n_samples, args.n_elbo, args.n_ode))
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    run_dir = out / f"{args.basis}"
    print(f"== training {args.train_minutes:g} min into {run_dir}", flush=True)
    trained = train_or_reuse(cfg, run_dir, device)
    images = _eval_images(cfg, None, max(args.n_elbo, args.n_ode))
    result = {
        "benchmark": "softness",
        "environment": environment(device),
        "basis": args.basis,
        "budget_minutes": args.train_minutes,
        "steps": trained["steps"],
        "train_seconds": trained["seconds"],
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for softness in values:
        softened = [f"process.schedule.softness={softness}"]
        run_cfg, model = load_run(run_dir, device=device, overrides=softened)
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
