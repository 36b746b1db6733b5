"""Exact sampler benchmark: every sampler and NFE against the Gaussian-field oracle.

The denoiser is the exact posterior mean of Gaussian random fields with a power-law spectrum
(diagonal in the benchmark's basis), so every error is the sampler's own (plus Monte-Carlo
noise, measured the same way from exact samples of the same count). Per configuration
(schedule x resolution x channels) and per sampler and NFE it reports:

- ``var_rel_error``: mean over the basis' component groups (Haar bands, DCT frequency octaves)
  of ``|mean over the group of sample variance / true variance - 1|``;
- ``mean_error``: the same for the mean, ``|mean over the group of (sample mean - true mean) /
  true std|``;
- ``mc_floor`` / ``mc_floor_mean``: those errors for exact samples of the same count (averaged
  over ``--floor-repeats`` draws);
- ``map_error`` (deterministic samplers): ``max_i |g_i^2 / g_exact,i^2 - 1|``, the largest
  relative error of a component's output variance against the exact PF-ODE on the same grid,
  in closed form (:mod:`nudiff.samplers.surrogate`): no Monte-Carlo noise.

A sampler may carry options, ``NAME:KEY=VALUE+KEY=VALUE`` (e.g. ``unipc:order=2``,
``heun:variable=t``, ``dpmpp-3m:form=damped``); its rows are labelled so.

Every sampler runs on the grids of ``--grid`` (``auto``: the one the library derives from the
schedule; ``optimized``: fitted to fields of another spectrum, ``--fit-exponent``, for the
deterministic samplers). The summary checks the targets: the smallest NFE per sampler whose
variance error is within 1000-step Euler-Maruyama's error plus the floor, and whether
DPM-Solver++ beats Heun and DDIM at 20 NFE.

With ``--run RUN[,RUN]`` the samplers run on trained models instead and are scored by the
Frechet distance against held-out images (:mod:`nudiff.bench.samplers_trained`).
"""

from __future__ import annotations

import time

from nudiff.bench import samplers_trained
from nudiff.bench.common import add_feature_options, environment, write_json
from nudiff.cli.vocabulary import GRID_NAMES, SAMPLER_NAMES, add, deprecated

SCHEDULES = ("vp-cosine", "multispeed", "soft", "edm")
NFES = (5, 10, 20, 50, 100, 200, 1000)
ODE_SAMPLERS = ("euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "unipc")
SDE_SAMPLERS = ("euler-maruyama", "ancestral", "pc", "dpmpp-2m-sde", "dpmpp-3m-sde")
# the samplers of nudiff.samplers.sample (the family samplers beta and onestep need a model)
SAMPLERS = tuple(s for s in SAMPLER_NAMES if s not in ("beta", "onestep"))


def add_arguments(p) -> None:
    run_help = "trained runs to benchmark instead of the Gaussian-field oracle (FD vs held-out)"
    add(p, "--run", run_help, many=True)
    add(p, "--resolution", "image sizes of the settings", many=True, default=[32, 64])
    deprecated(p, "--resolutions", "--resolution")
    add(p, "--image-channels", "image channels of the settings", many=True, default=[1, 3])
    deprecated(p, "--channels", "--image-channels")
    add(
        p,
        "--schedules",
        f"schedules: {', '.join(SCHEDULES)}",
        many=True,
        default=["vp-cosine", "multispeed", "soft"],
    )
    add(
        p,
        "--samplers",
        f"samplers to compare: {', '.join(SAMPLERS)}; options as NAME:KEY=VALUE+KEY=VALUE "
        f"(default: {','.join([*ODE_SAMPLERS, *SDE_SAMPLERS, 'dopri5'])}; with --run: "
        f"{','.join(samplers_trained.SAMPLERS)})",
        many=True,
    )
    nfe_help = (
        "network evaluations per sample of the fixed-step samplers (default: "
        f"{','.join(map(str, NFES))}; with --run: {','.join(map(str, samplers_trained.NFES))})"
    )
    add(p, "--nfe", nfe_help, many=True)
    add(
        p,
        "--n-samples",
        "samples at 32x32x1; larger images get N * 1024 / (C H W), at least --min-samples "
        "(with --run: samples per row, and held-out reference images)",
        default=1024,
    )
    deprecated(p, "--n", "--n-samples")
    add(p, "--min-samples", default=256)
    deprecated(p, "--min-n", "--min-samples")
    grid_help = "time grids, each a set of rows (with --run, default: auto,optimized)"
    add(p, "--grid", grid_help, many=True, choices=None)
    fit_help = (
        "--grid optimized: fit the grids to fields of this spectrum exponent (not the "
        "benchmark's: the grid meets data it was not fitted to)"
    )
    add(p, "--fit-exponent", fit_help, default=1.5)
    tol_help = "dopri5 tolerances (rtol = atol), one run each"
    add(p, "--ode-tolerance", tol_help, many=True, default=[1e-2, 1e-3, 1e-4])
    deprecated(p, "--tolerances", "--ode-tolerance")
    add(p, "--floor-repeats", default=4)
    add(p, "--exponent", "exponent of the fields' power-law spectrum", default=2.0)
    add(p, "--plot", "also draw the error (FD with --run) against NFE here, a panel per setting")
    add(p, "--out", "with --run: where the feature network is cached", default="runs/samplers")
    add_feature_options(p)


def problem(schedule: str, resolution: int, channels: int, exponent: float = 2.0):
    """``(process, oracle, basis name)`` for one benchmark setting (float32, on the CPU):
    Gaussian fields whose spectrum falls as the power ``exponent`` of the frequency."""
    from nudiff.bases import DCT, Haar
    from nudiff.bases.haar import default_haar_levels
    from nudiff.oracle import GaussianOracle, field_model
    from nudiff.process import Process
    from nudiff.schedules import EDM, MultiSpeed, SoftConditioning, VPCosine

    shape = (channels, resolution, resolution)
    if schedule == "vp-cosine":
        basis, sched = DCT(shape), VPCosine()
    elif schedule == "multispeed":
        basis = Haar(shape, default_haar_levels(resolution))
        sched = MultiSpeed(basis.level_map() - 1)
    elif schedule == "soft":
        basis = DCT(shape)
        sched = SoftConditioning(basis.label(), softness=1.0)
    elif schedule == "edm":
        basis, sched = DCT(shape), EDM()
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    process = Process(basis, sched)
    oracle = GaussianOracle(process, field_model(shape, exponent, basis=basis)).float()
    return process, oracle, type(basis).__name__.lower()


def parse_sampler(spec: str) -> tuple[str, str, dict]:
    """``"unipc:order=2+variant=bh1"`` -> ``(spec, "unipc", {"order": 2, "variant": "bh1"})``,
    checked against the sampler's own keywords."""
    import yaml

    from nudiff.samplers import check_options

    name, _, rest = spec.partition(":")
    if name not in SAMPLERS:
        raise ValueError(f"--samplers: unknown {name!r}; known: {', '.join(SAMPLERS)}")
    options = {}
    for item in filter(None, rest.split("+")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--samplers: {spec!r}: options are KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    return spec, name, check_options(name, options)


def group_errors(u, oracle, index, groups: int) -> tuple[float, float]:
    """``(var_rel_error, mean_error)`` of samples ``u`` ``(n, C, H, W)`` (see module doc),
    computed on the CPU in float64 wherever ``u`` and the oracle are."""
    import torch

    u = u.detach().cpu().double()
    m, w = oracle.m.detach().cpu().double(), oracle.w.detach().cpu().double()
    index = index.cpu()
    ratio = u.var(0) / w
    z = (u.mean(0) - m) / w.sqrt()
    flat = index.flatten()
    count = torch.bincount(flat, minlength=groups).double()
    var_g = torch.zeros(groups, dtype=torch.float64).index_add_(0, flat, ratio.flatten()) / count
    mean_g = torch.zeros(groups, dtype=torch.float64).index_add_(0, flat, z.flatten()) / count
    return (var_g - 1).abs().mean().item(), mean_g.abs().mean().item()


def run(args) -> dict:
    import copy

    from nudiff.devices import resolve_device

    device = resolve_device(args.device)
    trained = bool(args.run)
    if trained:
        defaults = samplers_trained.SAMPLERS, samplers_trained.NFES, samplers_trained.GRIDS
    else:
        defaults = (*ODE_SAMPLERS, *SDE_SAMPLERS, "dopri5"), NFES, ("auto",)
    args = copy.copy(args)
    args.samplers = args.samplers or list(defaults[0])
    args.nfe = args.nfe or list(defaults[1])
    grids = args.grid or list(defaults[2])
    bad = [g for g in grids if g not in GRID_NAMES]
    if bad:
        raise ValueError(f"--grid: unknown {bad}; known: {', '.join(GRID_NAMES)}")
    samplers = [parse_sampler(s) for s in args.samplers]
    if trained:
        return samplers_trained.run_trained(args, samplers, grids, device)
    unknown = [s for s in args.schedules if s not in SCHEDULES]
    if unknown:
        raise ValueError(f"--schedules: unknown {unknown}; known: {', '.join(SCHEDULES)}")
    rows, summary = [], []
    args.grids = grids
    for grid in grids:
        args.grid = grid
        for schedule in args.schedules:
            for res in args.resolution:
                for ch in args.image_channels:
                    setting, setting_rows = _run_setting(args, schedule, res, ch, samplers, device)
                    setting["grid"] = grid
                    rows += setting_rows
                    summary.append(_targets(setting, [r for r in rows if _same(r, setting)]))
    result = {
        "benchmark": "samplers",
        "environment": environment(device),
        "grid": grids[0] if len(grids) == 1 else grids,
        "rows": rows,
        "summary": summary,
    }
    for s in summary:
        print(s)
    write_json(result, args.json)
    if args.plot:
        plot(result, args.plot)
    return result


def _run_setting(
    args, schedule: str, res: int, ch: int, samplers: list[str], device
) -> tuple[dict, list[dict]]:
    """Every sampler run of one setting: the setting (with its Monte-Carlo floors) and its
    rows, printed as they come."""
    import copy

    from nudiff.samplers import SAMPLERS as SAMPLERS_FN
    from nudiff.samplers import STOCHASTIC, sample
    from nudiff.samplers.surrogate import map_error

    process, oracle, basis = problem(schedule, res, ch, args.exponent)
    index, names = process.basis.groups()
    setting = _setting(args, schedule, basis, res, ch, oracle, index, len(names))
    n = setting["n"]
    oracle = oracle.to(device)  # and its process: the samplers run on the device
    rows = []
    exact = copy.deepcopy(oracle).double()  # the closed-form map, in float64
    optimized = args.grid == "optimized"
    fit = None  # the surrogate optimized grids are fitted to: another spectrum
    if optimized:
        fit = copy.deepcopy(problem(schedule, res, ch, args.fit_exponent)[1]).double()
    for label, name, steps, options in _sampler_runs(samplers, args):
        deterministic = name not in STOCHASTIC and name != "dopri5"
        if optimized and not deterministic and "auto" in args.grids:
            continue  # the auto pass has its rows: it runs on the auto grid either way
        grid = _grid(args, exact, fit, name, steps, options) if deterministic else None
        began = time.perf_counter()
        out = sample(
            oracle,
            process,
            n,
            sampler=name,
            steps=steps or 1,
            ts=grid if optimized and deterministic else None,
            grid="auto" if optimized else args.grid,
            options=options,
            seed=args.seed,
            device=device,
        )
        seconds = time.perf_counter() - began
        var_err, mean_err = group_errors(out.u, oracle, index, len(names))
        map_err = None
        if deterministic:
            map_err = map_error(SAMPLERS_FN[name], exact, exact.process, grid, options)
        rows.append(
            {
                **setting,
                "sampler": label,
                # stochastic and adaptive samplers keep the auto grid under --grid optimized
                "grid": args.grid if deterministic or not optimized else "auto",
                "steps": steps,
                "nfe": out.nfe,
                "var_rel_error": var_err,
                "mean_error": mean_err,
                "map_error": map_err,
                "seconds": seconds,
                **({"rtol": options["rtol"]} if name == "dopri5" else {}),
            }
        )
        exact_text = "" if map_err is None else f" map {map_err:.2e}"
        print(
            f"{schedule:>10} {res}x{res}x{ch} {label:>14} nfe {out.nfe:>5}  "
            f"var {var_err:.4f} mean {mean_err:.4f} (floor {setting['mc_floor']:.4f})" + exact_text,
            flush=True,
        )
    return setting, rows


def _setting(args, schedule, basis, res, ch, oracle, index, groups: int) -> dict:
    """One setting's description, its sample count and its Monte-Carlo floors (exact draws of
    that count, on the CPU)."""
    import torch

    n = max(args.min_samples, args.n_samples * 1024 // (ch * res * res))
    g = torch.Generator().manual_seed(args.seed + 1)
    floors = [
        group_errors(oracle.sample_u0(n, g), oracle, index, groups)
        for _ in range(args.floor_repeats)
    ]
    return {
        "schedule": schedule,
        "basis": basis,
        "resolution": res,
        "channels": ch,
        "n": n,
        "mc_floor": sum(f[0] for f in floors) / len(floors),
        "mc_floor_mean": sum(f[1] for f in floors) / len(floors),
    }


def _grid(args, exact, fit, name: str, steps: int, options: dict):
    """A deterministic run's grid: fitted to ``fit`` (``--grid optimized``), else ``--grid``'s
    (the grid of its closed-form map either way)."""
    from nudiff.samplers import make_grid
    from nudiff.samplers.optimized import optimize_grid

    if fit is not None:
        return optimize_grid(fit, name, steps, options=options)[0]
    return make_grid(exact.process, steps, args.grid)


def _sampler_runs(samplers: list[tuple[str, str, dict]], args) -> list[tuple]:
    """``(label, sampler, steps, options)`` of every run: dopri5 once per ``--ode-tolerance``,
    the fixed-step samplers at every ``--nfe`` they can take."""
    from nudiff.samplers import steps_for_nfe

    runs = []
    for label, name, options in samplers:
        if name == "dopri5":
            for x in args.ode_tolerance:
                runs.append((label, name, None, {**options, "rtol": float(x), "atol": float(x)}))
        else:
            for nfe in args.nfe:
                try:
                    runs.append((label, name, steps_for_nfe(name, nfe, options), options))
                except ValueError:
                    continue  # e.g. Heun at 2 NFE
    return runs


def _same(row: dict, setting: dict) -> bool:
    return all(row[k] == setting[k] for k in ("schedule", "resolution", "channels"))


def _targets(setting: dict, rows: list[dict]) -> dict:
    """The targets for one setting and grid (None where a needed row was not run): Euler-
    Maruyama@1000 is the reference whatever grid it ran on."""
    em_rows = [r for r in rows if r["sampler"] == "euler-maruyama" and r["nfe"] >= 1000]
    rows = [r for r in rows if r["grid"] == setting.get("grid", r["grid"])]

    def err(sampler, nfe):
        hit = [r["var_rel_error"] for r in rows if r["sampler"] == sampler and r["nfe"] == nfe]
        return hit[0] if hit else None

    em = em_rows[0]["var_rel_error"] if em_rows else None
    out = {k: setting[k] for k in ("schedule", "resolution", "channels", "grid") if k in setting}
    out["em1000_var_error"] = em
    out["mc_floor"] = setting["mc_floor"]
    if em is not None:
        threshold = em + setting["mc_floor"]
        reach = {}
        for r in rows:
            if r["sampler"] != "euler-maruyama" and r["var_rel_error"] <= threshold:
                reach[r["sampler"]] = min(reach.get(r["sampler"], r["nfe"]), r["nfe"])
        dpm = [nfe for s, nfe in reach.items() if s.startswith("dpmpp")]
        out["dpmpp_nfe_to_reach_em1000"] = min(dpm) if dpm else None
        out["nfe_to_reach_em1000"] = dict(sorted(reach.items(), key=lambda kv: kv[1]))
    at20 = {
        s: err(s, nfe)
        for s, nfe in [("dpmpp-2m", 20), ("dpmpp-3m", 20), ("heun", 19), ("ddim", 20)]
    }
    if None not in at20.values():
        best = min(at20["dpmpp-2m"], at20["dpmpp-3m"])
        out["dpmpp_beats_heun_and_ddim_at_20_nfe"] = best < min(at20["heun"], at20["ddim"])
        out["var_error_at_20_nfe"] = at20
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = []
    for r in result["rows"]:
        key = (r["schedule"], r["resolution"], r["channels"])
        if key not in settings:
            settings.append(key)
    cols = min(3, len(settings))
    rows_ = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 4 * rows_), squeeze=False)
    for ax, key in zip(axes.flat, settings, strict=False):
        sel = [r for r in result["rows"] if (r["schedule"], r["resolution"], r["channels"]) == key]
        grids = {r["grid"] for r in sel}
        for key in dict.fromkeys((r["sampler"], r["grid"]) for r in sel):
            pts = sorted(
                (r["nfe"], r["var_rel_error"]) for r in sel if (r["sampler"], r["grid"]) == key
            )
            label = key[0] if len(grids) == 1 else f"{key[0]} ({key[1]})"
            style = "--" if key[1] == "optimized" else "-"
            ax.loglog(*zip(*pts, strict=True), ls=style, marker="o", ms=3, label=label)
        ax.axhline(sel[0]["mc_floor"], color="k", ls="--", lw=1, label="Monte-Carlo floor")
        # unstable few-step Euler-Maruyama runs reach 1e6: keep the informative range
        ax.set_ylim(0.3 * min(r["var_rel_error"] for r in sel), 10)
        ax.set_title(f"{key[0]} {key[1]}x{key[1]}x{key[2]} (n={sel[0]['n']})")
        ax.set_xlabel("NFE")
        ax.set_ylabel("variance error")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
