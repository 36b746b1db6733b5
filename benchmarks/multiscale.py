"""Multi-scale vs uniform sampling speed: measured and theoretical (counted MACs) speed-ups.

For each resolution and number of Haar levels, two models of the same UNet family with
untrained weights (timing does not depend on them) are sampled in this process, interleaved:

- ``uniform``: one UNet of base width ``--channels`` on the full image (VP cosine on pixels);
- ``multiscale``: a :class:`~nudiff.models.multiscale.MultiScaleDenoiser` on the Haar /
  multi-speed process, one UNet per scale, sampled coarse to fine with the steps split equally
  over the scales.

Both use the same sampler, NFE and batch. The theoretical speed-up is the ratio of the
multiply-adds of the networks actually run (``UNet.count_macs`` times the calls each network
received, counted by hooks during the timed runs), so ``efficiency = measured / theoretical``
says how much of the saving survives the sampler's own work and small-image kernels.

Settings: ``same-width`` (every scale has the uniform model's width) for every resolution and
level count, and ``msdiff`` (MSDiff's: 128x128, 4 scales, equal split, slimmer networks at high
resolution: width ``--msdiff-widths`` times ``--channels``, finest first).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, interleaved_timings, median, write_json


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def add_arguments(p) -> None:
    p.add_argument("--res", type=_ints, default=[32, 64, 128])
    p.add_argument("--levels", type=_ints, default=[2, 3, 4])
    p.add_argument("--channels", type=int, default=32, help="UNet base width (uniform model)")
    p.add_argument("--channel-mult", type=_ints, default=[1, 2, 2])
    p.add_argument("--attn-levels", type=_ints, default=[2])
    p.add_argument("--image-channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=12, help="sampler steps (NFE = steps + 1)")
    p.add_argument("--sampler", default="dpmpp-2m")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="samples per batch (default: 16 x (128 / resolution)^2, the same pixels per call)",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument(
        "--msdiff-widths",
        type=_floats,
        default=[0.5, 1.0, 1.0, 1.0],
        help="width factors per scale (finest first) of the msdiff row",
    )
    p.add_argument("--no-msdiff", action="store_true", help="skip MSDiff's setting")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both models' weights in channels-last memory format (faster convolutions on CPU)",
    )


def _unet(args, width: int, resolution: int, noise_features: int):
    from nudiff.build import fit_channel_mult
    from nudiff.models.unet import UNet

    mult = fit_channel_mult(args.channel_mult, resolution)  # as the library's coarse scales
    return UNet(
        in_channels=args.image_channels,
        channels=width,
        channel_mult=tuple(mult),
        num_res_blocks=1,
        attn_levels=tuple(a for a in args.attn_levels if a < len(mult)),
        noise_features=noise_features,
    )


def _models(args, res: int, levels: int, widths: list[int]):
    from nudiff.bases import Haar, Identity
    from nudiff.models.denoiser import Denoiser
    from nudiff.models.multiscale import MultiScaleDenoiser, coarse_process
    from nudiff.process import Process
    from nudiff.schedules import MultiSpeed, VPCosine

    shape = (args.image_channels, res, res)
    torch.manual_seed(0)
    flat = Process(Identity(shape), VPCosine())
    uniform = Denoiser(flat, _unet(args, args.channels, res, Denoiser.noise_features(flat)))
    haar = Haar(shape, levels)
    process = Process(haar, MultiSpeed(haar.level_map() - 1))
    features = Denoiser.noise_features(process)
    scales = []
    for s in range(levels + 1):
        sub = coarse_process(process, s)
        net = _unet(args, widths[s], sub.shape[-1], features)
        scales.append(Denoiser(sub, net, absent_groups=s))
    multi = MultiScaleDenoiser(process, scales)
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


def measure(args, res: int, levels: int, widths: list[int], setting: str) -> dict:
    from nudiff.samplers import sample

    uniform, multi = _models(args, res, levels, widths)
    batch = args.batch or max(1, round(16 * (128 / res) ** 2))
    kw = {"sampler": args.sampler, "steps": args.steps}
    nets = [uniform.backbone] + [d.backbone for d in multi.scales]
    calls, hooks = _count_calls(nets)
    results = {}

    def run_uniform():
        results["uniform"] = sample(uniform, uniform.process, batch, **kw)

    def run_multi():
        results["multiscale"] = sample(multi, multi.process, batch, **kw)

    run_uniform(), run_multi()  # warm-up (allocator, kernels), and one call count per model
    per_run = list(calls)
    timings = interleaved_timings({"uniform": run_uniform, "multiscale": run_multi}, args.rounds, 1)
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

    rows = []
    for res in args.res:
        for levels in args.levels:
            if res % 2**levels or res >> levels < 2:
                print(f"skip {res}x{res} with {levels} levels (coarsest band below 2x2)")
                continue
            rows.append(measure(args, res, levels, [args.channels] * (levels + 1), "same-width"))
            _print(rows[-1])
    if not args.no_msdiff:
        widths = [max(1, round(f * args.channels)) for f in args.msdiff_widths]
        rows.append(measure(args, 128, len(widths) - 1, widths, "msdiff"))
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
        "environment": environment(),
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
