"""Multi-scale vs uniform sampling speed: measured and theoretical (counted MACs) speed-ups.

For each ``--resolution`` and number of Haar ``--levels``, two models of the same UNet family
with untrained weights (timing does not depend on them) are sampled in this process,
interleaved, on ``--device``:

- ``uniform``: one UNet of base width ``--width`` on the full image (VP cosine on pixels);
- ``multiscale``: a :class:`~nudiff.models.multiscale.MultiScaleDenoiser` on the Haar /
  multi-speed process, one UNet per scale, sampled coarse to fine with the steps split equally
  over the scales.

Both use the same sampler, NFE and batch. The theoretical speed-up is the ratio of the
multiply-adds of the networks actually run (``UNet.count_macs`` times the calls each network
received, counted by hooks during the timed runs), so ``efficiency = measured / theoretical``
says how much of the saving survives the sampler's own work and small-image kernels.

Settings: ``same-width`` (every scale has the uniform model's width) for every resolution and
level count, and ``msdiff`` (MSDiff's: 128x128, 4 scales, equal split, slimmer networks at high
resolution: width ``--msdiff-widths`` times ``--width``, finest first).
"""

from __future__ import annotations

from nudiff.bench.common import environment, interleaved_timings, median, numbers, write_json
from nudiff.cli.vocabulary import SAMPLER_NAMES, add, deprecated

# the samplers of Gaussian denoisers (beta and onestep are those of other model families)
SAMPLERS = tuple(s for s in SAMPLER_NAMES if s not in ("beta", "onestep"))


def add_arguments(p) -> None:
    add(p, "--resolution", "image sizes to time", many=True, default=[32, 64, 128])
    deprecated(p, "--res", "--resolution")
    levels_help = "Haar levels to time (scales below the full resolution)"
    add(p, "--levels", levels_help, many=True, default=[2, 3, 4])
    add(p, "--width", "the UNet's base width (the uniform model's, and every scale's)", default=32)
    deprecated(p, "--channels", "--width")
    add(p, "--channel-mult", many=True, default=[1, 2, 2])
    add(p, "--attn-levels", many=True, default=[2])
    add(p, "--image-channels", default=3)
    add(p, "--steps", "sampler steps (NFE = steps + 1)", default=12)
    add(p, "--sampler", default="dpmpp-2m", choices=SAMPLERS)
    add(
        p,
        "--batch-size",
        "samples per batch (default: 16 x (128 / resolution)^2, the same pixels per call)",
        default=None,
    )
    deprecated(p, "--batch", "--batch-size")
    add(p, "--rounds", default=3)
    add(p, "--msdiff-widths", many=True, default=[0.5, 1.0, 1.0, 1.0])
    add(p, "--no-msdiff")
    add(
        p,
        "--channels-last",
        "both models' weights in channels-last memory format (faster convolutions on CPU)",
        default=True,
    )


def _unet(args, width: int, resolution: int, noise_features: int):
    from nudiff.build import fit_channel_mult
    from nudiff.models.unet import UNet

    channel_mult = numbers(args.channel_mult, int, "--channel-mult")
    mult = fit_channel_mult(channel_mult, resolution)  # as the library's coarse scales
    attn_levels = numbers(args.attn_levels, int, "--attn-levels")
    return UNet(
        in_channels=args.image_channels,
        channels=width,
        channel_mult=tuple(mult),
        num_res_blocks=1,
        attn_levels=tuple(a for a in attn_levels if a < len(mult)),
        noise_features=noise_features,
    )


def _models(args, res: int, levels: int, widths: list[int], device):
    import torch

    from nudiff.bases import Haar, Identity
    from nudiff.models.denoiser import Denoiser
    from nudiff.models.multiscale import MultiScaleDenoiser, coarse_process
    from nudiff.process import Process
    from nudiff.schedules import MultiSpeed, VPCosine

    shape = (args.image_channels, res, res)
    torch.manual_seed(0)
    flat = Process(Identity(shape), VPCosine())
    uniform = Denoiser(flat, _unet(args, args.width, res, Denoiser.noise_features(flat)))
    haar = Haar(shape, levels)
    process = Process(haar, MultiSpeed(haar.level_map() - 1))
    features = Denoiser.noise_features(process)
    scales = []
    for s in range(levels + 1):
        sub = coarse_process(process, s)
        net = _unet(args, widths[s], sub.shape[-1], features)
        scales.append(Denoiser(sub, net, absent_groups=s))
    multi = MultiScaleDenoiser(process, scales)
    uniform, multi = uniform.to(device), multi.to(device)
    if args.channels_last:
        uniform, multi = (m.to(memory_format=torch.channels_last) for m in (uniform, multi))
    return uniform.eval(), multi.eval()


def _count_calls(nets) -> tuple[list[int], list]:
    calls = [0] * len(nets)
    hooks = []
    for i, net in enumerate(nets):

        def hook(module, inputs, i=i):
            calls[i] += 1

        hooks.append(net.register_forward_pre_hook(hook))
    return calls, hooks


def measure(args, res: int, levels: int, widths: list[int], setting: str, device) -> dict:
    from nudiff.samplers import sample

    uniform, multi = _models(args, res, levels, widths, device)
    batch = args.batch_size or max(1, round(16 * (128 / res) ** 2))
    kw = {"sampler": args.sampler, "steps": args.steps, "device": device}
    nets = [uniform.backbone] + [d.backbone for d in multi.scales]
    calls, hooks = _count_calls(nets)
    results = {}

    def run_uniform():
        results["uniform"] = sample(uniform, uniform.process, batch, **kw)

    def run_multi():
        results["multiscale"] = sample(multi, multi.process, batch, **kw)

    run_uniform(), run_multi()  # warm-up (allocator, kernels), and one call count per model
    per_run = list(calls)
    fns = {"uniform": run_uniform, "multiscale": run_multi}
    timings = interleaved_timings(fns, args.rounds, 1, device)
    for h in hooks:
        h.remove()
    c, h, w = multi.process.shape
    macs = [uniform.backbone.count_macs(h, w)]
    macs += [d.backbone.count_macs(h >> s, w >> s) for s, d in enumerate(multi.scales)]
    uniform_macs = per_run[0] * macs[0]
    multi_macs = sum(n * m for n, m in zip(per_run[1:], macs[1:], strict=True))
    u_s = median(timings["uniform"]) / batch
    m_s = median(timings["multiscale"]) / batch
    theoretical = uniform_macs / multi_macs
    speedup = u_s / m_s
    return {
        "resolution": res,
        "levels": levels,
        "scales": levels + 1,
        "setting": setting,
        "widths": widths,
        "sampler": args.sampler,
        "nfe": results["uniform"].nfe,
        "multiscale_nfe": results["multiscale"].nfe,
        "calls_per_scale": per_run[1:],
        "batch": batch,
        "channels_last": args.channels_last,
        "uniform_s_per_sample": u_s,
        "multiscale_s_per_sample": m_s,
        "speedup": speedup,
        "theoretical_speedup": theoretical,
        "efficiency": speedup / theoretical,
        "uniform_gmacs_per_sample": uniform_macs / 1e9,
        "multiscale_gmacs_per_sample": multi_macs / 1e9,
        "timings_s": timings,
    }


def run(args) -> dict:
    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    rows = []
    for res in args.resolution:
        for levels in args.levels:
            if res % 2**levels or res >> levels < 2:
                print(f"skip {res}x{res} with {levels} levels (coarsest band below 2x2)")
                continue
            widths = [args.width] * (levels + 1)
            rows.append(measure(args, res, levels, widths, "same-width", device))
            _print(rows[-1])
    if not args.no_msdiff:
        factors = numbers(args.msdiff_widths, float, "--msdiff-widths")
        widths = [max(1, round(f * args.width)) for f in factors]
        rows.append(measure(args, 128, len(widths) - 1, widths, "msdiff", device))
        _print(rows[-1])
    msdiff = [r for r in rows if r["setting"] == "msdiff"]
    summary = {
        "min_efficiency": min(r["efficiency"] for r in rows),
        "all_rows_at_least_95_percent": all(r["efficiency"] >= 0.95 for r in rows),
        "msdiff_speedup": msdiff[0]["speedup"] if msdiff else None,
        "msdiff_at_least_4_4x": bool(msdiff and msdiff[0]["speedup"] >= 4.4),
    }
    print(summary)
    result = {
        "benchmark": "multiscale",
        "environment": environment(device),
        "rows": rows,
        "summary": summary,
    }
    write_json(result, args.json)
    return result


def _print(r: dict) -> None:
    print(
        f"{r['resolution']:>4} {r['levels']} levels {r['setting']:<10} nfe {r['nfe']:>3}: "
        f"uniform {1e3 * r['uniform_s_per_sample']:8.1f} ms/sample, multi-scale "
        f"{1e3 * r['multiscale_s_per_sample']:8.1f} ms/sample, speed-up {r['speedup']:.2f}x "
        f"(theory {r['theoretical_speedup']:.2f}x, efficiency {r['efficiency']:.1%})",
        flush=True,
    )
