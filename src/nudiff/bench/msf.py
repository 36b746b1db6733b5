"""MSF vs a single-stage model at equal training wall-clock on CIFAR-10 32x32.

Trains the packaged ``cifar10_uniform.yaml`` (``--single-config``: one UNet over every pixel and
every time) and ``cifar10_msf.yaml`` (``--msf-config``; MSF: a base network at 16x16, then a
light residual network at 32x32 with fewer steps) for ``--train-minutes`` each, one after the
other, then samples
``--n-samples`` images from each with its config's sampler and step budget. Rows: model,
training minutes and steps, the Frechet distance (with its bootstrap standard error) and KID
against as many held-out training images in the feature space of the offline feature network,
network multiply-adds per sample (counted on every network call by forward hooks and
``count_macs`` at the size of the call), ms per sample and NFE.

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
"""

from __future__ import annotations

from pathlib import Path

from nudiff.bench.common import (
    add_feature_options,
    bench_feature_net,
    budget_config,
    check_holdout,
    environment,
    held_out_reference,
    score_samples,
    train_or_reuse,
    write_json,
)
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

CONFIGS = {
    "single-stage": str(CONFIG_DIR / "cifar10_uniform.yaml"),
    "msf": str(CONFIG_DIR / "cifar10_msf.yaml"),
}


def add_arguments(p) -> None:
    add(p, "--train-minutes", default=15.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--n-samples", "samples per model, and held-out reference images", default=2000)
    add(p, "--single-config", default=CONFIGS["single-stage"])
    add(p, "--msf-config", default=CONFIGS["msf"])
    add(p, "--data", "the CIFAR-10 .npz (default: the configs')")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/msf")
    add_feature_options(p)
    add(p, "--set", "override a key of both configs (repeatable)")


def backbones(model) -> list:
    """The networks of a denoiser: one, or one per scale of a multi-scale model."""
    scales = getattr(model, "scales", None)
    if scales is None:
        return [model.backbone]
    return list({id(d.backbone): d.backbone for d in scales}.values())


def count_macs(model):
    """Forward hooks that record every network call: ``(macs, remove)``, where ``macs()`` adds
    up ``count_macs`` at each call's image size times its batch."""
    calls: dict[tuple, int] = {}

    def hook(net, inputs):
        x = inputs[0]
        key = (net, x.shape[-2], x.shape[-1])
        calls[key] = calls.get(key, 0) + x.shape[0]

    def macs() -> int:  # after sampling: count_macs runs the network, which would recurse
        return sum(net.count_macs(h, w) * rows for (net, h, w), rows in calls.items())

    handles = [net.register_forward_pre_hook(hook) for net in backbones(model)]
    return macs, lambda: [h.remove() for h in handles]


def score_run(run_dir: Path, args, net, f_ref, grid, device="auto") -> dict:
    from nudiff.run import load_run, sample_model

    cfg, model = load_run(run_dir, device=device)
    macs, remove = count_macs(model)
    try:
        out = sample_model(
            cfg, model, args.n_samples, seed=args.seed, progress=True, batch_size=250
        )
    finally:
        remove()
    return {
        "macs_per_sample": macs() / args.n_samples,
        "parameters": sum(p.numel() for p in model.parameters()),
        "budgets": cfg.sample.budgets,
        **score_samples(out, net, f_ref, args.seed, grid_png=grid),
    }


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {
        "single-stage": budget_config(args.single_config, args.train_minutes, args.data, args.set),
        "msf": budget_config(args.msf_config, args.train_minutes, args.data, args.set),
    }
    if cfgs["msf"].process.schedule.type != "msf":
        raise ValueError(f"{args.msf_config} is not an msf config (process.schedule.type)")
    if cfgs["single-stage"].data.path != cfgs["msf"].data.path:
        raise ValueError("the two configs must read the same data")
    cfg = cfgs["msf"]
    check_holdout(cfg, args.n_samples)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)
    result = {
        "benchmark": "msf",
        "environment": environment(device),
        "budget_minutes": args.train_minutes,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name, c in cfgs.items():
        run_dir = out / name
        print(f"== {name}: training {args.train_minutes:g} min into {run_dir}", flush=True)
        trained = train_or_reuse(c, run_dir, device)
        row = {
            "model": name,
            "train_minutes": trained["seconds"] / 60,
            "steps": trained["steps"],
            "images_per_s": trained["images_per_s"],
            **score_run(run_dir, args, net, f_ref, out / f"{name}_samples.png", device),
        }
        result["rows"].append(row)
        print(
            f"{name}: {row['steps']} steps in {row['train_minutes']:.1f} min, FD {row['fd']:.2f} "
            f"+- {row['fd_se']:.2f}, {row['macs_per_sample'] / 1e9:.2f} GMAC/sample, "
            f"{row['ms_per_sample']:.1f} ms/sample, {row['nfe']} NFE",
            flush=True,
        )
    single, msf = result["rows"]
    result["comparison"] = {
        "mac_ratio": msf["macs_per_sample"] / single["macs_per_sample"],
        "time_ratio": msf["ms_per_sample"] / single["ms_per_sample"],
        "fd_difference": msf["fd"] - single["fd"],
        "fd_se": (msf["fd_se"] ** 2 + single["fd_se"] ** 2) ** 0.5,
        "target_met": msf["macs_per_sample"] <= 0.55 * single["macs_per_sample"]
        and msf["fd"] <= single["fd"] + single["fd_se"],
    }
    write_json(result, args.json)
    return result
