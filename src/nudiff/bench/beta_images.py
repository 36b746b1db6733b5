"""Beta diffusion on MNIST: KLUB vs the ELBO vs a Gaussian diffusion at equal training time.

Trains the packaged ``mnist32_beta.yaml`` twice, with ``loss.beta.type: klub`` (the paper's
objective) and ``elbo`` (the same KLs with swapped arguments), and the packaged ``mnist32.yaml``
(a Gaussian diffusion: VP cosine on pixels, EDM preconditioning) with the same UNet, batch and
learning rate, each for ``--train-minutes`` of wall-clock (``--losses`` picks the rows), one
after the other. Then ``--n-samples`` samples of each (Beta: ``--steps`` multiplicative steps
from the data mean; Gaussian: its config's sampler) are scored by the Frechet distance (with its
bootstrap standard error) and KID against as many held-out training images in the offline
feature network's space.

Rows: ``loss, steps, images_per_s, fd, fd_se, kid, kid_std, nfe, ms_per_sample``. The
``comparison`` block: ``fd(elbo) - fd(klub)`` with the standard error of the difference
(independent samples: the root sum of squares) and which loss wins beyond two standard errors
(``klub``, ``elbo`` or ``tie``).

Run it with nothing else on the machine: the budgets are wall-clock.
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
    sample_and_score,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add
from nudiff.config_files import CONFIG_DIR

LOSSES = ("klub", "elbo", "gaussian")
BETA, GAUSSIAN = str(CONFIG_DIR / "mnist32_beta.yaml"), str(CONFIG_DIR / "mnist32.yaml")


def add_arguments(p) -> None:
    add(p, "--train-minutes", "wall-clock minutes of training per model", default=10.0)
    losses = "klub and elbo: Beta diffusion with that loss; gaussian: a Gaussian diffusion"
    add(p, "--losses", losses, many=True, default=list(LOSSES))
    add(p, "--n-samples", "samples per model, and held-out reference images", default=1000)
    add(p, "--steps", "Beta sampler steps (the Gaussian model keeps its config's)", default=200)
    add(p, "--data", "the MNIST .npz (default: the configs')")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/beta")
    add_feature_options(p)
    add(p, "--set", "override a key of every config (repeatable)")


def config_for(args, loss: str):
    """The ``loss`` row's config: ``mnist32_beta`` with that Beta loss, or ``mnist32``."""
    if loss == "gaussian":
        return budget_config(GAUSSIAN, args.train_minutes, args.data, args.set)
    extra = [f"loss.beta.type={loss}", f"sample.steps={args.steps}"]
    return budget_config(BETA, args.train_minutes, args.data, args.set, extra)


def compare(rows: list[dict]) -> dict | None:
    """KLUB against the ELBO: the FD difference, its standard error and the winner beyond two
    standard errors (None without both rows)."""
    by_loss = {r["loss"]: r for r in rows}
    if not {"klub", "elbo"} <= set(by_loss):
        return None
    klub, elbo = by_loss["klub"], by_loss["elbo"]
    diff = elbo["fd"] - klub["fd"]
    se = math.hypot(klub["fd_se"], elbo["fd_se"])
    winner = "klub" if diff > 2 * se else "elbo" if diff < -2 * se else "tie"
    return {"fd_elbo_minus_klub": diff, "se": se, "winner": winner}


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    losses = [loss.strip() for loss in args.losses if loss.strip()]
    unknown = sorted(set(losses) - set(LOSSES))
    if unknown or not losses:
        raise ValueError(f"--losses takes names from {', '.join(LOSSES)}, got {args.losses}")
    cfgs = {loss: config_for(args, loss) for loss in losses}  # every config checked first
    cfg = next(iter(cfgs.values()))
    if len({c.data.path for c in cfgs.values()}) != 1:
        raise ValueError("the configs must read the same data")
    check_holdout(cfg, args.n_samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    rows = []
    for loss, loss_cfg in cfgs.items():
        run_dir = out / loss
        print(f"== {loss}: training {args.train_minutes:g} min into {run_dir}", flush=True)
        trained = train_or_reuse(loss_cfg, run_dir, device)
        grid = out / f"{loss}_samples.png"
        scored = sample_and_score(
            run_dir, args.n_samples, net, f_ref, args.seed, grid_png=grid, device=device
        )
        row = {"loss": loss, **{k: trained[k] for k in ("steps", "images_per_s")}, **scored}
        rows.append(row)
        print(
            f"{loss}: {row['steps']} steps, FD {row['fd']:.2f} +- {row['fd_se']:.2f}, "
            f"{row['nfe']} NFE, {row['ms_per_sample']:.1f} ms/sample",
            flush=True,
        )
    result = {
        "benchmark": "beta-images",
        "environment": environment(device),
        "train_minutes": args.train_minutes,
        "n_samples": args.n_samples,
        "beta_steps": args.steps,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": rows,
    }
    comparison = compare(rows)
    if comparison is not None:
        result["comparison"] = comparison
        print(
            f"KLUB vs ELBO: FD(elbo) - FD(klub) = {comparison['fd_elbo_minus_klub']:.2f} +- "
            f"{comparison['se']:.2f}: {comparison['winner']}",
            flush=True,
        )
    write_json(result, args.json)
    return result
