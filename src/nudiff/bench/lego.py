"""UNet vs DiT vs LEGO at equal training wall-clock on MNIST 32x32, and LEGO brick skipping.

Trains the packaged ``mnist32.yaml`` (UNet), ``mnist32_dit.yaml`` and ``mnist32_lego.yaml``
(``--backbones``) for ``--train-minutes`` each, one after the other, then samples
``--n-samples`` images from each with the configs' sampler, and the LEGO model once more with
``--skip`` (default: the last brick skipped for the last 50% of the steps). Rows: backbone,
skip, brick calls per sampling trajectory (counted by forward hooks on the bricks), backbone
multiply-accumulates per sample, ms per sample, and the Frechet distance (with its bootstrap
standard error) and KID against as many held-out training images in the feature space of the
offline feature network. The LEGO model is also sampled on a larger canvas, ``--resolution``
(default 64x64; ``HxW`` such as ``32x128`` for panoramas): ``--n-samples-large`` canvases, cut
into the 32x32 tiles that LEGO's largest bricks cover, all tiles scored against the same
reference, beside as many 32x32 samples as tiles (a Frechet distance depends on the sample
count).

Run it with nothing else on the machine: the budgets and sampling times are wall-clock.
"""

from __future__ import annotations

from dataclasses import replace
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
from nudiff.cli.vocabulary import ImageSize, add, deprecated
from nudiff.config_files import CONFIG_DIR

CONFIGS = {
    "unet": str(CONFIG_DIR / "mnist32.yaml"),
    "dit": str(CONFIG_DIR / "mnist32_dit.yaml"),
    "lego": str(CONFIG_DIR / "mnist32_lego.yaml"),
}


def add_arguments(p) -> None:
    add(p, "--train-minutes", default=10.0)
    deprecated(p, "--budget-minutes", "--train-minutes")
    add(p, "--n-samples", "samples per row, and held-out reference images", default=2000)
    add(p, "--skip", "the brick-skipping row's rule (LEGO)", default="bricks=last,from=0.5")
    add(
        p,
        "--resolution",
        "the larger canvas LEGO also samples at: N (N x N) or HxW, multiples of the trained size",
        type=ImageSize(canvas=True),
        metavar="PX|HxW",
        default=64,
    )
    add(p, "--n-samples-large", "canvases sampled at --resolution", default=500)
    deprecated(p, "--n-large", "--n-samples-large")
    backbones = f"backbones to train and score: {', '.join(CONFIGS)}"
    add(p, "--backbones", backbones, many=True, default=list(CONFIGS))
    add(p, "--data", "the MNIST .npz (default: the configs')")
    add(p, "--out", "folder of the runs, sample grids and feature network", default="runs/lego")
    add_feature_options(p)
    add(p, "--set", "override a key of every config (repeatable)")


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
    run_dir: Path,
    args,
    net,
    f_ref,
    trained: int,
    skip=None,
    resolution=None,
    grid=None,
    n=None,
    device="auto",
) -> dict:
    """Sample a run (optionally skipping bricks, or at another resolution: then its
    ``trained`` x ``trained`` tiles are scored) and score it; brick calls per trajectory and
    backbone MACs per sample come from hooks and ``count_macs``."""
    from nudiff.data import save_image_grid
    from nudiff.models.lego import LEGO, unfold_regions
    from nudiff.run import load_run, sample_model
    from nudiff.samplers import BrickSkip

    n = n or args.n_samples
    cfg, model = load_run(run_dir, resolution=resolution, device=device)
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
    height, width = out.images.shape[-2:]
    if lego:
        full = backbone.count_macs(height, width, bricks=backbone.num_bricks)
        part = 0
        if rule:
            part = backbone.count_macs(height, width, bricks=rule.keep(backbone.num_bricks))
        macs = (out.nfe - out.skipped) * full + out.skipped * part
        calls = [c // batches for c in counts]
    else:
        macs, calls = out.nfe * backbone.count_macs(height, width), None
    canvas = None
    if resolution is not None:  # the larger canvas as a grid, its tiles scored
        canvas = f"{height}x{width}"
        save_image_grid(out.images[:64].clamp(-1, 1), grid, min_size=64)
        cut = replace(out, images=unfold_regions(out.images, trained))
        scored = score_samples(cut, net, f_ref, args.seed)
        scored["n_canvases"] = len(out.images)
    else:
        scored = score_samples(out, net, f_ref, args.seed, grid_png=grid)
    return {
        "skip": skip,
        "resolution": res,
        "canvas": canvas,
        "brick_calls": calls,
        "macs_per_sample": macs,
        "parameters": sum(p.numel() for p in model.parameters()),
        **scored,
    }


def canvas_tiles(resolution, trained: int) -> int:
    """The ``trained`` x ``trained`` tiles of a ``resolution`` canvas (N or ``(H, W)``); raises
    unless both sides are multiples of ``trained``."""
    from nudiff.run import canvas_size

    height, width = canvas_size(resolution)
    if height % trained or width % trained:
        raise ValueError(f"--resolution {height}x{width} must be a multiple of {trained} a side")
    return (height // trained) * (width // trained)


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    names = [b.strip() for b in args.backbones if b.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        raise ValueError(
            f"--backbones takes names from {sorted(CONFIGS)}, got {','.join(args.backbones)!r}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {
        name: budget_config(CONFIGS[name], args.train_minutes, args.data, args.set)
        for name in names
    }
    cfg = next(iter(cfgs.values()))
    if len({c.data.path for c in cfgs.values()}) != 1:
        raise ValueError("the configs must read the same data")
    check_holdout(cfg, args.n_samples)
    if "lego" in names:
        canvas_tiles(args.resolution, cfg.data.resolution)
    net, feature_info = bench_feature_net(cfg, args, out, device)
    f_ref, floor = held_out_reference(cfg, net, args.n_samples)

    result = {
        "benchmark": "lego",
        "environment": environment(device),
        "budget_minutes": args.train_minutes,
        "n_samples": args.n_samples,
        "data_vs_data_fd": floor,
        "feature_net": feature_info,
        "rows": [],
    }
    for name in names:
        result["rows"] += _train_and_score(name, cfgs[name], args, out, net, f_ref, device)
    skipping = _skipping(result["rows"], args.n_samples, cfg.data.resolution)
    if skipping is not None:
        result["skipping"] = skipping
    write_json(result, args.json)
    return result


def _train_and_score(name: str, cfg, args, out: Path, net, f_ref, device) -> list[dict]:
    """Train (or reuse) backbone ``name`` into ``out / name`` and score its rows: the full
    model, and for LEGO also brick skipping, the larger canvas and 32x32 at that sample
    count; each row printed as it comes."""
    from nudiff.run import canvas_size

    run_dir = out / name
    print(f"== {name}: training {args.train_minutes:g} min into {run_dir}", flush=True)
    trained = train_or_reuse(cfg, run_dir, device)
    kept = {k: trained[k] for k in ("steps", "images_per_s", "seconds")}
    variants = [(None, None, None)]  # (skip, resolution, n)
    if name == "lego":  # a larger canvas costs more: fewer of them, and 32x32 at its tile count
        n_tiles = args.n_samples_large * canvas_tiles(args.resolution, cfg.data.resolution)
        variants += [(args.skip, None, None), (None, args.resolution, args.n_samples_large)]
        variants += [(None, None, n_tiles)] if n_tiles != args.n_samples else []
    rows = []
    for skip, resolution, n in variants:
        size = resolution and "x".join(map(str, canvas_size(resolution)))
        tag = "skip" if skip else f"{size}px" if resolution else "full"
        tag += f"_n{n}" if n and not resolution else ""
        grid = out / f"{name}_{tag}_samples.png"
        scored = score_model(
            run_dir, args, net, f_ref, cfg.data.resolution, skip, resolution, grid, n, device
        )
        row = {"backbone": name, **kept, **scored}
        rows.append(row)
        print(
            f"{name} [{tag}]: {kept['steps']} steps, FD {row['fd']:.2f} +- {row['fd_se']:.2f}"
            f", {row['ms_per_sample']:.2f} ms/sample, {row['macs_per_sample'] / 1e9:.2f} "
            f"GMAC/sample, brick calls {row['brick_calls']}",
            flush=True,
        )
    return rows


def _skipping(rows: list[dict], n_samples: int, resolution: int) -> dict | None:
    """LEGO brick skipping against the full stack at the training ``resolution`` and
    ``n_samples``: time and MAC savings, FD ratio, and whether the target (>= 25% faster,
    FD within 15%) is met; None without both rows."""
    by_key = {
        (r["backbone"], bool(r["skip"]), r["resolution"]): r
        for r in rows
        if r["n"] == n_samples and not r["canvas"]
    }
    full = by_key.get(("lego", False, resolution))
    skipped = by_key.get(("lego", True, resolution))
    if not (full and skipped):
        return None
    saving = 1 - skipped["ms_per_sample"] / full["ms_per_sample"]
    ratio = skipped["fd"] / full["fd"]
    return {
        "time_saving": saving,
        "mac_saving": 1 - skipped["macs_per_sample"] / full["macs_per_sample"],
        "fd_ratio": ratio,
        "target_met": saving >= 0.25 and ratio <= 1.15,
    }
