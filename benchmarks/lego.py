"""UNet vs DiT vs LEGO at equal training wall-clock on MNIST 32x32, and LEGO brick skipping.

Trains ``configs/mnist32.yaml`` (UNet), ``configs/mnist32_dit.yaml`` and
``configs/mnist32_lego.yaml`` for ``--budget-minutes`` each, one after the other, then samples
``--n-samples`` images from each with the configs' sampler, and the LEGO model once more with
``--skip`` (default: the last brick skipped for the last 50% of the steps). Rows: backbone,
skip, brick calls per sampling trajectory (counted by forward hooks on the bricks), backbone
multiply-accumulates per sample, ms per sample, and the Frechet distance (with its bootstrap
standard error) and KID against as many held-out training images in the feature space of the
offline feature network. The LEGO model is also sampled at ``--resolution`` (default 64x64):
``--n-large`` samples, whose 32x32 centre crops are scored against the same reference, beside
as many 32x32 samples (a Frechet distance depends on the sample count).

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
"""

from __future__ import annotations

from dataclasses import replace
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
CONFIGS = {
    "unet": ROOT / "configs" / "mnist32.yaml",
    "dit": ROOT / "configs" / "mnist32_dit.yaml",
    "lego": ROOT / "configs" / "mnist32_lego.yaml",
}


def add_arguments(p) -> None:
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training minutes each")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--skip", default="bricks=last,from=0.5", help="the skipping row's rule")
    p.add_argument("--resolution", type=int, default=64, help="LEGO's larger sampling size")
    p.add_argument(
        "--n-large", type=int, default=500, help="samples at --resolution (and at 32x32 again)"
    )
    p.add_argument("--backbones", default="unet,dit,lego", help="which to train and score")
    p.add_argument("--data", default=None, help="the MNIST .npz (default: the configs')")
    p.add_argument("--out", default="runs/lego")
    p.add_argument("--features", default=None, help="feature network (.safetensors)")
    p.add_argument("--feature-steps", type=int, default=1500)
    p.add_argument("--set", action="append", default=[], help="override for every config")
    p.add_argument("--seed", type=int, default=0)


def count_brick_calls(model):
    """Forward hooks counting the calls of each LEGO brick: ``(counts, remove)``."""
    counts = [0] * model.backbone.num_bricks

    def hook(i):
        def fn(module, inputs, output):
            counts[i] += 1

        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(model.backbone.bricks)]
    return counts, lambda: [h.remove() for h in handles]


def score_model(
    run_dir: Path, args, net, f_ref, trained: int, skip=None, resolution=None, grid=None, n=None
) -> dict:
    """Sample a run (optionally skipping bricks, or at another resolution: then its centre
    crops of the ``trained`` size are scored) and score it; brick calls per trajectory and
    backbone MACs per sample come from hooks and ``count_macs``."""
    from nudiff.data import save_image_grid
    from nudiff.models.lego import LEGO
    from nudiff.run import load_run, sample_model
    from nudiff.samplers import BrickSkip

    n = n or args.n_samples
    cfg, model = load_run(run_dir, resolution=resolution)
    backbone = model.backbone
    rule = BrickSkip.parse(skip) if skip else None
    lego = isinstance(backbone, LEGO)
    counts, remove = count_brick_calls(model) if lego else (None, lambda: None)
    batch = 256
    try:
        out = sample_model(
            cfg, model, n, seed=args.seed, skip=rule, progress=True, batch_size=batch
        )
    finally:
        remove()
    batches = -(-n // batch)
    res = cfg.data.resolution
    if lego:
        full = backbone.count_macs(res, res, bricks=backbone.num_bricks)
        part = backbone.count_macs(res, res, bricks=rule.keep(backbone.num_bricks)) if rule else 0
        macs = (out.nfe - out.skipped) * full + out.skipped * part
        calls = [c // batches for c in counts]
    else:
        macs, calls = out.nfe * backbone.count_macs(res, res), None
    if resolution is not None:  # the larger canvas as a grid, its centre crops scored
        save_image_grid(out.images[:64].clamp(-1, 1), grid, min_size=64)
        lo, size = (res - trained) // 2, trained
        crops = out.images[..., lo : lo + size, lo : lo + size]
        scored = score_samples(replace(out, images=crops), net, f_ref, args.seed)
    else:
        scored = score_samples(out, net, f_ref, args.seed, grid_png=grid)
    return {
        "skip": skip,
        "resolution": res,
        "brick_calls": calls,
        "macs_per_sample": macs,
        "parameters": sum(p.numel() for p in model.parameters()),
        **scored,
    }


def run(args) -> dict:
    from nudiff.eval.features import load_feature_net

    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        raise ValueError(f"--backbones takes names from {sorted(CONFIGS)}, got {args.backbones!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {
        name: budget_config(CONFIGS[name], args.budget_minutes, args.data, args.set)
        for name in names
    }
    cfg = next(iter(cfgs.values()))
    if len({c.data.path for c in cfgs.values()}) != 1:
        raise ValueError("the configs must read the same data")
    check_holdout(cfg, args.n_samples)
    features, feature_info = feature_net(
        cfg, out / "features.safetensors", args.features, args.feature_steps, args.seed
    )
    net = load_feature_net(features)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)

    result = {
        "benchmark": "lego",
        "environment": environment(),
        "budget_minutes": args.budget_minutes,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name in names:
        run_dir = out / name
        print(f"== {name}: training {args.budget_minutes:g} min into {run_dir}", flush=True)
        trained = train_or_reuse(cfgs[name], run_dir)
        kept = {k: trained[k] for k in ("steps", "images_per_s", "seconds")}
        variants = [(None, None, None)]
        if name == "lego":  # the larger canvas costs 4x: fewer samples, and 32x32 at that n
            variants += [(args.skip, None, None), (None, args.resolution, args.n_large)]
            variants += [(None, None, args.n_large)]
        for skip, resolution, n in variants:
            tag = "skip" if skip else f"{resolution}px" if resolution else "full"
            tag += f"_n{n}" if n and not resolution else ""
            scored = score_model(
                run_dir,
                args,
                net,
                f_ref,
                cfgs[name].data.resolution,
                skip,
                resolution,
                out / f"{name}_{tag}_samples.png",
                n,
            )
            row = {"backbone": name, **kept, **scored}
            result["rows"].append(row)
            print(
                f"{name} [{tag}]: {kept['steps']} steps, FD {row['fd']:.2f} +- {row['fd_se']:.2f}"
                f", {row['ms_per_sample']:.2f} ms/sample, {row['macs_per_sample'] / 1e9:.2f} "
                f"GMAC/sample, brick calls {row['brick_calls']}",
                flush=True,
            )
    rows = {
        (r["backbone"], bool(r["skip"]), r["resolution"]): r
        for r in result["rows"]
        if r["n"] == args.n_samples
    }
    full = rows.get(("lego", False, cfg.data.resolution))
    skipped = rows.get(("lego", True, cfg.data.resolution))
    if full and skipped:
        saving = 1 - skipped["ms_per_sample"] / full["ms_per_sample"]
        ratio = skipped["fd"] / full["fd"]
        result["skipping"] = {
            "time_saving": saving,
            "mac_saving": 1 - skipped["macs_per_sample"] / full["macs_per_sample"],
            "fd_ratio": ratio,
            "target_met": saving >= 0.25 and ratio <= 1.15,
        }
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    run(parser.parse_args())
