"""Samplers on trained models: Frechet distance against held-out images per sampler, time grid
and NFE (``nudiff bench samplers --run RUN``).

Each run (a uniform and a multi-scale MNIST model, say) draws ``--n-samples`` images per
sampler x grid x NFE with the same seed, scored in the offline feature network's space against
as many held-out images of the run's data (the images its config keeps out of training): FD with
its bootstrap standard error, KID, the NFE the sampler used, and the sampling time per sample.
Stochastic and adaptive samplers run on the ``auto`` grid only (an ``optimized`` grid is fitted
to a deterministic sampler's map). A multi-scale model splits its steps over its scales, so a
sampler that cannot give every scale a step at an NFE (e.g. Heun at 5) has no row there.

The summary per run gives, for every sampler and grid, the FD at 10 NFE against its FD at the
largest NFE run (100 by default), and names the best at 10 NFE.
"""

from __future__ import annotations

import math
from pathlib import Path

from nudiff.bench.common import (
    bench_feature_net,
    environment,
    held_out_reference,
    score_samples,
    write_json,
)

NFES = (5, 8, 10, 15, 20, 50, 100)
SAMPLERS = ("heun", "ddim", "dpmpp-2m", "dpmpp-3m", "unipc", "unipc:order=2", "dpmpp-2m-sde")
GRIDS = ("auto", "optimized")
#: the NFE the summary compares with the largest one run
FEW = 10


def run_trained(args, samplers: list[tuple[str, str, dict]], grids: list[str], device) -> dict:
    """Every run of ``args.run`` x ``samplers`` (``(label, name, options)``) x ``grids`` x
    ``args.nfe``; rows, per-run summaries, and the plot when ``args.plot`` is set."""
    from nudiff.data.npz import data_file
    from nudiff.run import load_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "samplers-trained",
        "environment": environment(device),
        "n_samples": args.n_samples,
        "runs": [],
        "rows": [],
        "summary": [],
    }
    net = f_ref = data = None
    for path in args.run:
        cfg, model = load_run(path, device=device)
        if cfg.data.name != "npz":
            raise ValueError(
                f"--run: {path} trains on data.name={cfg.data.name}; the benchmark scores "
                "against held-out images of an .npz (data.name: npz, data.holdout)"
            )
        if data is None:
            net, result["feature_net"] = bench_feature_net(cfg, args, out, device)
            f_ref, result["data_vs_data_fd"] = held_out_reference(cfg, net, args.n_samples)
            data = (data_file(cfg.data.path).resolve(), cfg.data.holdout)
        elif (data_file(cfg.data.path).resolve(), cfg.data.holdout) != data:
            raise ValueError(
                f"--run: {path} holds out other images ({cfg.data.path}, data.holdout "
                f"{cfg.data.holdout}) than the first run ({data[0]}, {data[1]})"
            )
        rows = _score_run(args, path, cfg, model, samplers, grids, net, f_ref, device)
        result["runs"].append(str(path))
        result["rows"] += rows
        result["summary"].append(summarize(str(path), rows))
        print(result["summary"][-1], flush=True)
    write_json(result, args.json)
    if args.plot:
        plot_trained(result, args.plot)
    return result


def _score_run(args, path, cfg, model, samplers, grids, net, f_ref, device) -> list[dict]:
    """The rows of one run, printed as they come."""
    from nudiff.run import grid_folder, sample_model
    from nudiff.samplers import STOCHASTIC, steps_for_nfe

    rows = []
    for label, name, options in samplers:
        for grid in grids:
            if grid == "optimized" and (name in STOCHASTIC or name == "dopri5"):
                continue
            for nfe in args.nfe:
                try:
                    steps = steps_for_nfe(name, nfe, options)
                    samples = sample_model(
                        cfg,
                        model,
                        args.n_samples,
                        sampler=name,
                        steps=steps,
                        grid=grid,
                        options=options,
                        seed=args.seed,
                        device=device,
                        grid_cache=grid_folder(path),
                    )
                except ValueError as e:  # too few steps for this sampler or the scales
                    print(f"   {label} {grid} @ {nfe} NFE: no row ({e})", flush=True)
                    continue
                scored = score_samples(samples, net, f_ref, args.seed)
                row = {"run": str(path), "sampler": label, "grid": grid, "nfe_budget": nfe}
                rows.append({**row, "steps": steps, **scored})
                print(
                    f"{Path(path).name:>12} {label:>14} {grid:>9} nfe {scored['nfe']:>4}  "
                    f"FD {scored['fd']:.3f} +- {scored['fd_se']:.3f}  "
                    f"{scored['ms_per_sample']:.2f} ms/sample",
                    flush=True,
                )
    return rows


def summarize(run: str, rows: list[dict]) -> dict:
    """FD at :data:`FEW` NFE against FD at the largest NFE run, per sampler and grid; the best
    at :data:`FEW` and whether its FD there is within 15% of its own at the largest NFE."""
    top = max((r["nfe_budget"] for r in rows), default=None)
    pairs = {}
    for r in rows:
        if r["nfe_budget"] in (FEW, top):
            pairs.setdefault((r["sampler"], r["grid"]), {})[r["nfe_budget"]] = r
    table = []
    for (sampler, grid), at in pairs.items():
        if FEW in at and top in at and top != FEW:
            few, many = at[FEW], at[top]
            table.append(
                {
                    "sampler": sampler,
                    "grid": grid,
                    f"fd_{FEW}": few["fd"],
                    f"fd_{FEW}_se": few["fd_se"],
                    f"fd_{top}": many["fd"],
                    f"fd_{top}_se": many["fd_se"],
                    "ratio": few["fd"] / many["fd"],
                    "ratio_se": few["fd"]
                    / many["fd"]
                    * math.hypot(few["fd_se"] / few["fd"], many["fd_se"] / many["fd"]),
                }
            )
    out = {"run": run, "largest_nfe": top, "pairs": table}
    if table:
        best = min(table, key=lambda p: p[f"fd_{FEW}"])
        out["best_at_few"] = f"{best['sampler']} ({best['grid']} grid)"
        out["best_within_15pct_of_largest"] = best["ratio"] <= 1.15
    return out


def plot_trained(result: dict, path: str) -> None:
    """FD against NFE, one panel per run, one line per sampler and grid (error bars: one
    standard error; the dashed line: FD between two sets of held-out images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    # one colour per sampler in every panel; the grid is the line style
    samplers = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    colour = {s: f"C{i % 10}" for i, s in enumerate(samplers)}
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for ax, run in zip(axes.flat, runs, strict=True):
        sel = [r for r in result["rows"] if r["run"] == run]
        for key in dict.fromkeys((r["sampler"], r["grid"]) for r in sel):
            pts = sorted(
                (r["nfe"], r["fd"], r["fd_se"]) for r in sel if (r["sampler"], r["grid"]) == key
            )
            nfe, fd, se = zip(*pts, strict=True)
            style = "-" if key[1] == "auto" else "--"
            ax.errorbar(
                nfe,
                fd,
                yerr=se,
                ls=style,
                color=colour[key[0]],
                marker="o",
                ms=3,
                capsize=2,
                label=f"{key[0]} ({key[1]})",
            )
        if result.get("data_vs_data_fd") is not None:
            ax.axhline(result["data_vs_data_fd"], color="k", ls=":", lw=1, label="data vs data")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{Path(run).name} (n={result['n_samples']})")
        ax.set_xlabel("NFE")
        ax.set_ylabel("Frechet distance (feature net)")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
