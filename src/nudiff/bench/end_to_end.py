"""End to end: time per sample at equal quality, MSDiff's route against nudiff's fast routes.

Four routes to MNIST 32x32 samples, each scored by the Frechet distance (with its bootstrap
standard error) against held-out images in the offline feature network's space:

(a) the uniform model with Euler-Maruyama at ``--reference-steps`` (1,000) steps: score_sde's
    and MSDiff's sampler, the reference;
(b) the multi-scale model with its config's sampler;
(c) the multi-scale model with each ``--fast-sampler`` on the ``--grid`` grid (stochastic
    samplers: ``auto``) at each ``--nfe``;
(d) SiD's one-step generator distilled from the multi-scale model.

The models are ``--uniform-run``, ``--multiscale-run`` and ``--sid-run``, or trained here (the
packaged ``mnist32_uniform.yaml`` and ``mnist32_multiscale.yaml`` for ``--train-minutes`` each,
then SiD for ``--distill-minutes``) and reused by a later call with the same settings. Every
route draws ``--n-samples`` images at batch 256; the time is the sampling wall-clock only. The
comparison gives each route's speed-up over (a) and whether its FD is within 10% of (a)'s.

Run it with nothing else on the machine: the budgets and times are wall-clock.
"""

from __future__ import annotations

import math
from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    environment,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add
from nudiff.config_files import CONFIG_DIR

#: the FD margin within which a route counts as equal quality to the reference
MARGIN = 0.10


def add_arguments(p) -> None:
    add(p, "--uniform-run")
    add(p, "--multiscale-run")
    add(p, "--sid-run")
    add(p, "--train-minutes", "minutes of training of each model trained here", default=12.0)
    add(p, "--distill-minutes", default=12.0)
    add(p, "--reference-steps", "Euler-Maruyama steps of route (a)", default=1000)
    add(p, "--fast-sampler", "route (c)'s samplers", many=True, default=["unipc:order=2"])
    add(p, "--grid", "route (c)'s time grid", default="optimized")
    add(p, "--nfe", "route (c)'s NFE, one row each", many=True, default=[10, 15])
    add(p, "--n-samples", "samples per route, and held-out reference images", default=1000)
    add(p, "--data", "the MNIST .npz of the models trained here (default: the configs')")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/e2e")
    add_feature_options(p)


def _models(args, out: Path, device) -> dict[str, Path]:
    """The three run folders, trained (or reused) where not given."""
    from nudiff.bench.sid import distill_or_reuse, distill_sets
    from nudiff.distill.run import distill_config

    runs = {}
    for name in ("uniform", "multiscale"):
        given = getattr(args, f"{name}_run")
        if given:
            runs[name] = Path(given)
            continue
        runs[name] = out / name
        cfg = budget_config(CONFIG_DIR / f"mnist32_{name}.yaml", args.train_minutes, args.data)
        print(f"== {name}: training {args.train_minutes:g} min into {runs[name]}", flush=True)
        train_or_reuse(cfg, runs[name], device)
    if args.sid_run:
        runs["sid"] = Path(args.sid_run)
    else:
        runs["sid"] = out / "sid"
        sets = distill_sets(args.distill_minutes)
        print(f"== SiD: distilling {args.distill_minutes:g} min into {runs['sid']}", flush=True)
        distill_or_reuse(distill_config(runs["multiscale"], sets), runs["sid"], device)
    return runs


def _routes(args) -> list[tuple[str, str, dict]]:
    """``(route, model, sampling settings)`` of every row."""
    from nudiff.bench.samplers import parse_sampler
    from nudiff.samplers import STOCHASTIC, steps_for_nfe

    reference = {"sampler": "euler-maruyama", "steps": args.reference_steps, "grid": "auto"}
    routes = [("a", "uniform", reference), ("b", "multiscale", {})]
    for spec in args.fast_sampler:
        _, name, options = parse_sampler(spec)
        # an optimized grid is fitted to a deterministic sampler: the others keep auto
        grid = "auto" if name in STOCHASTIC else args.grid
        for nfe in args.nfe:
            fast = {"sampler": name, "options": options, "grid": grid}
            steps = steps_for_nfe(name, nfe, options)
            routes.append(("c", "multiscale", {**fast, "steps": steps}))
    routes.append(("d", "sid", {}))
    return routes


def run(args) -> dict:
    from nudiff.devices import resolve_device
    from nudiff.run import grid_folder, load_run, sample_model

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    routes = _routes(args)  # checks --fast-sampler before any training
    runs = _models(args, out, device)
    cfg, _ = load_run(runs["uniform"], device="cpu")
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    result = {
        "benchmark": "end-to-end",
        "environment": environment(device),
        "runs": {k: str(v) for k, v in runs.items()},
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    loaded = {}
    for route, model_name, settings in routes:
        if model_name not in loaded:
            loaded[model_name] = load_run(runs[model_name], device=device)
        mcfg, model = loaded[model_name]
        samples = sample_model(
            mcfg,
            model,
            args.n_samples,
            seed=args.seed,
            device=device,
            grid_cache=grid_folder(runs[model_name]),
            **settings,
        )
        png = out / f"route_{route}_{samples.nfe}nfe.png"
        scored = score_samples(samples, net, f_ref, args.seed, png)
        sampler = settings.get("sampler", mcfg.sample.sampler)
        grid = settings.get("grid", mcfg.sample.grid)
        row = {"route": route, "model": model_name, "sampler": sampler, "grid": grid, **scored}
        result["rows"].append(row)
        print(
            f"({route}) {model_name:>10} {sampler:>14} {grid:>9} {row['nfe']:>5} NFE: FD "
            f"{row['fd']:.3f} +- {row['fd_se']:.3f}, {row['ms_per_sample']:.2f} ms/sample",
            flush=True,
        )
    result["comparison"] = compare(result["rows"])
    for c in result["comparison"]["routes"]:
        print(c)
    print(f"target met: {result['comparison']['target_met']}")
    write_json(result, args.json)
    return result


def compare(rows: list[dict]) -> dict:
    """Every route against route (a): speed-up (a's ms per sample over its own), FD ratio with
    its standard error, and whether the FD is within :data:`MARGIN` of (a)'s. The target: a
    route (c) or (d) at least 20x faster at equal quality."""
    ref = next(r for r in rows if r["route"] == "a")
    out = []
    for r in rows:
        if r is ref:
            continue
        ratio = r["fd"] / ref["fd"]
        se = ratio * math.hypot(r["fd_se"] / r["fd"], ref["fd_se"] / ref["fd"])
        out.append(
            {
                "route": r["route"],
                "nfe": r["nfe"],
                "speedup": ref["ms_per_sample"] / r["ms_per_sample"],
                "fd_ratio": ratio,
                "fd_ratio_se": se,
                "equal_quality": ratio <= 1 + MARGIN,
            }
        )
    met = any(c["route"] in ("c", "d") and c["equal_quality"] and c["speedup"] >= 20 for c in out)
    return {"reference_fd": ref["fd"], "margin": MARGIN, "routes": out, "target_met": met}
