"""GUD's softness sweep: one model per basis over a range of softness, scored at each value.

For each basis of ``--basis`` (one or several, comma-separated: ``pixel``, ``pca``, ``dct``,
``fourier``, ``haar``) trains the packaged ``mnist32_soft.yaml`` (``--config``) with its
soft-conditioning schedule in that basis, ``loss.softness`` covering every ``--values``, into
``--out/BASIS``: ``--train-steps`` optimiser steps each (the same for every basis whatever else
runs on the machine), or ``--train-minutes`` of wall-clock each; or reuses the run. Soft
conditioning orders the components by the basis's default label (``process.schedule.label``
null): PCA rank, the radial frequency of DCT and Fourier, the Haar level, and the column for
``pixel`` (left to right). Every basis keeps the config's prior (the data-matched one: every
component whitened by its own mean and standard deviation, as GUD does), so the bases differ
only in the components and their order.

Then for each basis and softness: the variational bound (``--n-elbo`` held-out images,
``--times`` denoiser calls each) and the PF-ODE NLL (``--n-ode`` held-out images, Hutchinson
divergence, dopri5 at ``--ode-tolerance``) in bits/dim, and the Frechet distance (with its
bootstrap standard error) and KID of ``--n-samples`` samples against as many held-out images in
the offline feature network's space. Writes 64 samples per softness into each run folder,
``--out/softness_S.png`` with the samples of every basis at softness ``S`` (two rows each when
there are several), ``--json`` (rows ``basis, softness, elbo_bpd, ode_bpd, fd, n_samples`` with
standard errors, steps and steps/s), prints one Markdown table, and with ``--plot`` draws FD and
ELBO bits/dim against softness, one line per basis. Scores are kept in each run folder and
reused by a later call with the same settings.
"""

from __future__ import annotations

import json
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

#: ``--basis`` name -> ``process.basis.type``
BASES = {"pixel": "identity", "pca": "pca", "dct": "dct", "fourier": "fourier", "haar": "haar"}
#: samples per basis in ``--out/softness_S.png`` when several bases share it
GRID_PER_BASIS = 16


def add_arguments(p) -> None:
    basis = f"bases of the soft conditioning, each trained and scored: {', '.join(BASES)}"
    add(p, "--basis", basis, many=True, default=["pca"])
    values = "softness values to score (numbers > 0, or inf)"
    add(p, "--values", values, many=True, default=[0.25, 0.5, 1, 2, 4, math.inf])
    budget = p.add_mutually_exclusive_group()
    steps = "optimiser steps of training per basis (the same for every basis)"
    add(budget, "--train-steps", steps)
    minutes = "wall-clock minutes of training per basis, when --train-steps is not given"
    add(budget, "--train-minutes", minutes, default=15.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--n-samples", "samples per softness, and held-out reference images", default=2000)
    add(p, "--n-elbo", default=200)
    add(p, "--n-ode", default=50)
    add(p, "--times", default=64)
    add(p, "--ode-tolerance", "dopri5 tolerance of the PF-ODE NLL (rtol = atol)", default=1e-5)
    add(p, "--config", default=str(CONFIG_DIR / "mnist32_soft.yaml"))
    add(p, "--data", "the MNIST .npz (default: the config's)")
    out = "folder of the runs (one per basis), sample grids and feature network"
    add(p, "--out", out, default="runs/softness")
    add_feature_options(p)
    add(p, "--set", "override a key of the config of every basis (repeatable)")
    add(p, "--plot", "also draw FD and ELBO bits/dim against softness, a line per basis, here")


def parse_values(values) -> list[float]:
    """``--values`` (a list, or comma-separated text) as floats, checked to be > 0."""
    values = numbers(values, float, "--values")
    if not values or min(values) <= 0:
        raise ValueError(f"--values must be > 0, got {','.join(map(str, values))}")
    return values


def parse_bases(bases) -> list[str]:
    """``--basis`` (a list, or comma-separated text) checked against :data:`BASES`, each once."""
    if isinstance(bases, str):
        bases = [b.strip() for b in bases.split(",") if b.strip()]
    bad = [b for b in bases if b not in BASES]
    if bad or not bases:
        raise ValueError(
            f"--basis: unknown {', '.join(map(repr, bad)) or 'none given'}; known: "
            f"{', '.join(BASES)}"
        )
    if len(set(bases)) != len(bases):
        raise ValueError(f"--basis names a basis twice: {','.join(bases)}")
    return list(bases)


def _tag(softness: float) -> str:
    return "inf" if math.isinf(softness) else f"{softness:g}"


def _budget(args) -> tuple[list[str], str]:
    """The training-budget overrides and their description."""
    if args.train_steps is not None:
        if args.train_steps < 1:
            raise ValueError(f"--train-steps must be >= 1, got {args.train_steps}")
        return [f"train.steps={args.train_steps}", "train.max_minutes=null"], (
            f"{args.train_steps} steps"
        )
    return [], f"{args.train_minutes:g} min"


def basis_config(args, basis: str, values: list[float]):
    """The config of one basis: ``--config`` with that basis, ``loss.softness`` covering
    ``values``, the budget (no sample grids or TensorBoard during training), then ``--set``."""
    from nudiff.config import load_config

    extra = [
        f"process.basis.type={BASES[basis]}",
        f"loss.softness={{min: {min(values)}, max: {max(values)}}}",
    ]
    steps, _ = _budget(args)
    if not steps:
        return budget_config(args.config, args.train_minutes, args.data, args.set, extra)
    overrides = [*extra, *steps, "train.sample_every=0", "train.tensorboard=false"]
    overrides += [*([f"data.path={args.data}"] if args.data else []), *(args.set or [])]
    return load_config(args.config, overrides)


def label_of(cfg) -> str:
    """The label soft conditioning orders the components by: the config's, or the basis's
    default."""
    from nudiff.bases import DCT, PCA, Fourier, Haar, Identity

    kinds = {"identity": Identity, "pca": PCA, "dct": DCT, "fourier": Fourier, "haar": Haar}
    return cfg.process.schedule.label or kinds[cfg.process.basis.type].default_label


def _settings(args, feature_info) -> dict:
    """What a kept score depends on besides the trained run."""
    return {
        "n_samples": args.n_samples,
        "n_elbo": args.n_elbo,
        "n_ode": args.n_ode,
        "times": args.times,
        "ode_tolerance": args.ode_tolerance,
        "seed": args.seed,
        "features": feature_info.get("features"),
    }


def run(args) -> dict:
    from nudiff.devices import resolve_device
    from nudiff.eval.commands import _eval_images

    device = resolve_device(args.device)
    bases = parse_bases(args.basis)
    values = parse_values(args.values)
    _, what = _budget(args)
    cfgs = {b: basis_config(args, b, values) for b in bases}  # every config checked first
    cfg = cfgs[bases[0]]
    if len({c.data.path for c in cfgs.values()}) > 1:
        raise ValueError("every basis must read the same data")
    check_holdout(cfg, max(args.n_samples, args.n_elbo, args.n_ode))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    images = _eval_images(cfg, None, max(args.n_elbo, args.n_ode))
    settings = _settings(args, feature_info)
    result = {
        "benchmark": "softness",
        "environment": environment(device),
        "bases": bases,
        "basis": ",".join(bases),
        "budget": what,
        "train_steps": args.train_steps,
        "budget_minutes": None if args.train_steps is not None else args.train_minutes,
        "values": values,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "runs": {},
        "rows": [],
    }
    grids = {}
    for basis in bases:
        run_dir = out / basis
        print(f"== {basis}: training {what} into {run_dir}", flush=True)
        trained = train_or_reuse(cfgs[basis], run_dir, device)
        batch = cfgs[basis].train.batch_size * cfgs[basis].train.grad_accum
        info = {
            "basis_type": BASES[basis],
            "label": label_of(cfgs[basis]),
            "prior": cfgs[basis].process.prior.type,
            "steps": trained["steps"],
            "train_seconds": trained["seconds"],
            "steps_per_s": trained["images_per_s"] / batch,
            "final_loss": trained["final_loss"],
        }
        result["runs"][basis] = info
        print(
            f"   {info['steps']} steps, {info['steps_per_s']:.2f} steps/s, label "
            f"{info['label']}, {info['prior']} prior",
            flush=True,
        )
        rows, samples = score_basis(
            args, basis, run_dir, values, images, (net, f_ref), settings, device
        )
        for row in rows:
            row.update(steps=info["steps"], steps_per_s=info["steps_per_s"])
        result["rows"] += rows
        for softness, x in samples.items():
            grids.setdefault(softness, []).append(x)
    result["steps"] = min(r["steps"] for r in result["runs"].values())  # all equal by steps
    result["train_seconds"] = sum(r["train_seconds"] for r in result["runs"].values())
    _write_grids(grids, out, len(bases))
    result["table"] = markdown_table(result)
    print(result["table"], flush=True)
    write_json(result, args.json)
    if args.plot:
        plot(result, args.plot)
    return result


def score_basis(args, basis, run_dir: Path, values, images, reference, settings, device):
    """The rows of one basis, one per softness, and the first 64 samples (uint8) drawn at each.
    Rows and samples are kept in ``run_dir`` (``softness_scores.json``,
    ``softness_S.npz``) and reused by a later call with the same settings and training."""
    import numpy as np

    from nudiff.data.transforms import float_to_uint8
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run, sample_model

    net, f_ref = reference
    kept_path = run_dir / "softness_scores.json"
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    if kept.get("settings") != settings or kept.get("trained") != _trained_mark(run_dir):
        kept = {"settings": settings, "trained": _trained_mark(run_dir), "rows": {}}
    rows, samples = [], {}
    for softness in values:
        tag = _tag(softness)
        first = run_dir / f"softness_{tag}.npz"
        if tag in kept["rows"] and first.is_file():
            print(f"   reusing the scores of softness {tag} in {kept_path}", flush=True)
            rows.append(kept["rows"][tag])
            samples[softness] = np.load(first)["x"]
            continue
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
            rtol=args.ode_tolerance,
            atol=args.ode_tolerance,
            seed=args.seed,
        )
        drawn = sample_model(run_cfg, model, args.n_samples, seed=args.seed, progress=True)
        scored = score_samples(drawn, net, f_ref, args.seed, run_dir / f"softness_{tag}.png")
        samples[softness] = float_to_uint8(drawn.images[:64].clamp(-1, 1)).cpu().numpy()
        np.savez_compressed(first, x=samples[softness])
        row = {
            "basis": basis,
            "softness": softness,
            "elbo_bpd": elbo["nll_bpd"],
            "elbo_se": elbo["stderr"],
            "ode_bpd": ode["nll_bpd"],
            "ode_se": ode["stderr"],
            "n_elbo": elbo["n"],
            "n_ode": ode["n"],
            "n_samples": args.n_samples,
            **scored,
            "elbo_seconds": elbo["seconds"],
            "ode_seconds": ode["seconds"],
            "ode_nfe": ode["nfe_mean"],
        }
        rows.append(row)
        kept["rows"][tag] = row
        kept_path.write_text(json.dumps(kept))
        print(
            f"{basis}, softness {tag}: ELBO {row['elbo_bpd']:.3f} +- {row['elbo_se']:.3f}, ODE "
            f"{row['ode_bpd']:.3f} +- {row['ode_se']:.3f} bits/dim, FD {row['fd']:.2f} +- "
            f"{row['fd_se']:.2f}",
            flush=True,
        )
    return rows, samples


def _trained_mark(run_dir: Path) -> str:
    """The run's ``train_summary.json``: scores kept for another training are not reused."""
    path = run_dir / "train_summary.json"
    return path.read_text() if path.is_file() else ""


def _write_grids(grids: dict, out: Path, n_bases: int) -> None:
    """``out/softness_S.png``: the samples (uint8) of every basis at softness ``S``, in
    ``--basis`` order (all 64 for one basis, :data:`GRID_PER_BASIS` each for several)."""
    import numpy as np
    import torch

    from nudiff.data import save_image_grid

    per = 64 if n_bases == 1 else GRID_PER_BASIS
    for softness, per_basis in grids.items():
        x = torch.from_numpy(np.concatenate([b[:per] for b in per_basis])).float() / 127.5 - 1
        save_image_grid(x, out / f"softness_{_tag(softness)}.png", nrow=8, min_size=64)


def _pm(value, se, digits: int) -> str:
    return f"{value:.{digits}f} +- {se:.{digits}f}"


def markdown_table(result: dict) -> str:
    """The result as Markdown: one row per basis and softness (ELBO and PF-ODE NLL in
    bits/dim, FD, each with its standard error), then the training of each basis."""
    n = result["n_samples"]
    lines = [
        f"| basis | softness | ELBO (bits/dim) | PF-ODE NLL (bits/dim) | FD (n = {n:,}) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['basis']} | {_tag(r['softness'])} | {_pm(r['elbo_bpd'], r['elbo_se'], 3)} | "
            f"{_pm(r['ode_bpd'], r['ode_se'], 3)} | {_pm(r['fd'], r['fd_se'], 2)} |"
        )
    lines += [
        "",
        "| basis | label | prior | steps | steps/s | training (min) |",
        "|---|---|---|---|---|---|",
    ]
    for basis, r in result["runs"].items():
        lines.append(
            f"| {basis} | {r['label']} | {r['prior']} | {r['steps']:,} | "
            f"{r['steps_per_s']:.2f} | {r['train_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    """FD (left) and ELBO bits/dim (right) against softness, one line per basis, with one
    standard error as bars; softness on an even axis from the lowest value to inf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({r["softness"] for r in result["rows"]})
    where = {v: i for i, v in enumerate(values)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bases = list(dict.fromkeys(r["basis"] for r in result["rows"]))
    for k, basis in enumerate(bases):
        dodge = 0.05 * (k - (len(bases) - 1) / 2)  # error bars side by side
        rows = sorted(
            (r for r in result["rows"] if r["basis"] == basis), key=lambda r: r["softness"]
        )
        x = [where[r["softness"]] + dodge for r in rows]
        for ax, key, se in ((axes[0], "fd", "fd_se"), (axes[1], "elbo_bpd", "elbo_se")):
            y, err = [r[key] for r in rows], [r[se] for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=basis)
    if result.get("data_vs_data_fd") is not None:
        axes[0].axhline(result["data_vs_data_fd"], color="k", ls=":", lw=1, label="data vs data")
    axes[0].set_ylabel(f"Frechet distance (feature net, n = {result['n_samples']:,})")
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylabel("ELBO (bits/dim)")
    for ax in axes:
        ax.set_xticks(range(len(values)), [_tag(v) for v in values])
        ax.set_xlabel("softness (inf: standard diffusion)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)  # the same colours on the right
    budget = result.get("budget")
    fig.suptitle(
        "GUD soft conditioning by basis, MNIST 32x32" + (f", {budget} each" if budget else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
