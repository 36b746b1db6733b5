"""Multi-scale (MSDiff) model: sub-processes, the exact prior answer for dropped bands,
coarse-to-fine sampling on the Gaussian oracle, call resolutions, per-scale training."""

import math

import pytest
import torch
from torch import nn

from conftest import QUICKSTART, assert_resume_exact, tiny
from nudiff.bases import Haar
from nudiff.build import build_data, build_denoiser, build_loss, build_process
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.models.denoiser import Denoiser
from nudiff.models.multiscale import MultiScaleDenoiser, coarse_process, pool_image
from nudiff.models.unet import UNet
from nudiff.oracle import DiagonalGaussian, GaussianOracle, field_model
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.samplers import SAMPLERS, CountingDenoiser, make_grid, sample
from nudiff.samplers.multiscale import equal_budgets, split_grid
from nudiff.schedules import MultiSpeed
from nudiff.training.ema import EMA

SHAPE = (1, 16, 16)


def _process(shape=SHAPE, levels=2, prior=None, finishing_times=None):
    basis = Haar(shape, levels)
    schedule = MultiSpeed(basis.level_map() - 1, finishing_times)
    return Process(basis, schedule, prior)


def _oracle_model(process):
    """The exact multi-scale model of a Gaussian random field: one oracle per scale."""
    data = field_model(process.shape, basis=process.basis)
    scales = []
    for s in range(process.basis.levels + 1):
        sub = coarse_process(process, s)
        _, h, w = sub.shape
        crop = DiagonalGaussian(sub.basis, data.mean[..., :h, :w], data.var[..., :h, :w])
        scales.append(GaussianOracle(sub, crop))
    return MultiScaleDenoiser(process, scales), GaussianOracle(process, data)


def _random_model(process, width=8):
    """Untrained per-scale denoisers (random non-zero output layers)."""
    torch.manual_seed(0)
    scales = []
    for s in range(process.basis.levels + 1):
        sub = coarse_process(process, s)
        unet = UNet(
            sub.shape[0],
            channels=width,
            channel_mult=(1,),
            attn_levels=(),
            noise_features=Denoiser.noise_features(process),
        )
        for p in unet.parameters():
            nn.init.normal_(p, std=0.05)
        scales.append(Denoiser(sub, unet, absent_groups=s))
    return MultiScaleDenoiser(process, scales)


@pytest.mark.parametrize("scale", [0, 1, 2])
def test_coarse_process_is_the_top_left_block_of_the_full_one(scale):
    shape = (2, 16, 16)
    x = torch.randn(6, *shape, dtype=torch.float64)
    full = _process(shape, prior=Prior(shape, torch.randn(shape), torch.rand(shape) + 0.5)).double()
    sub = coarse_process(full, scale)
    h = 16 >> scale
    assert sub.shape == (2, h, h)
    torch.testing.assert_close(sub.encode(pool_image(x, scale)), full.encode(x)[..., :h, :h])
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sub.log_snr(t), full.log_snr(t)[..., :h, :h].expand(11, 2, h, h))
    assert sub.schedule.breakpoints() == [
        b for b in full.schedule.breakpoints() if b >= sub.schedule.finishing_times[0]
    ]


def test_dropped_bands_get_exactly_the_prior_answer():
    process = _process().double()
    model = _random_model(process).double()
    u = torch.randn(5, *SHAPE, dtype=torch.float64)
    for t in (0.05, 0.2, 0.4, 0.5, 0.8, 0.99):
        tt = torch.tensor([t], dtype=torch.float64)
        out = model(u, tt)
        alpha, sigma = process.coefficients(tt, u)
        inactive = process.inactive(tt, like=u).expand_as(u)
        prior_answer = alpha * u / (alpha**2 + sigma**2)
        assert torch.equal(out[inactive], prior_answer.expand_as(u)[inactive])
        # ... which is the prior score, and the active block is the scale's network output
        score = process.score_from_x0(u, tt, out)
        torch.testing.assert_close(score[inactive], process.prior_score(u)[inactive])
        s = model.scale_at(t)
        h = 16 >> s
        assert inactive[..., :h, :h].sum() == 0 or s == process.basis.levels
        assert torch.equal(out[..., :h, :h], model.scales[s](u[..., :h, :h], tt))
        assert not torch.allclose(out[..., :h, :h], prior_answer.expand_as(u)[..., :h, :h])
    # per-row times at different scales: each row as if it were alone
    t = torch.tensor([0.1, 0.5, 0.9, 0.5, 0.1], dtype=torch.float64)
    rows = model(u, t)
    for i in range(5):
        torch.testing.assert_close(
            rows[i : i + 1], model(u[i : i + 1], t[i : i + 1]), rtol=0, atol=1e-12
        )


def test_scale_intervals_follow_the_finishing_times():
    model, _ = _oracle_model(_process(finishing_times=[0.2, 0.5, 1.0]))
    assert [model.scale_at(t) for t in (0.0, 0.19, 0.2, 0.49, 0.5, 1.0)] == [0, 0, 1, 1, 2, 2]
    assert [model.interval(s) for s in range(3)] == [(0.0, 0.2), (0.2, 0.5), (0.5, 1.0)]


@pytest.mark.parametrize(
    "sampler",
    [
        "dpmpp-2m",
        "dpmpp-2m-sde",
        "ddim",
        pytest.param("euler-maruyama", marks=pytest.mark.slow),
        "heun",
        "dopri5",
    ],
)
def test_coarse_to_fine_sampling_reproduces_the_field_variance(sampler):
    """Per Haar band, |sample variance / exact variance - 1| within 4 Monte-Carlo standard
    errors ``sqrt(2 / (n * band size))`` plus a 1% discretisation allowance; means too."""
    process = _process().double()
    model, oracle = _oracle_model(process)
    n = 4000
    # first order needs ~1000 steps per scale for a 1% error, second order 50
    steps = 3000 if sampler in ("ddim", "euler-maruyama") else 150
    options = {"rtol": 1e-6, "atol": 1e-6} if sampler == "dopri5" else {}
    out = sample(
        model,
        process,
        n,
        sampler=sampler,
        steps=steps,
        seed=3,
        options=options,
        dtype=torch.float64,
    )
    index, names = process.basis.groups()
    ratio = out.u.var(0) / oracle.w
    sizes = torch.bincount(index.flatten()).double()
    errors = torch.stack([ratio[index == g].mean() - 1 for g in range(len(names))]).abs()
    floor = (2 / (n * sizes)).sqrt()
    assert (errors < 4 * floor + 0.01).all(), (errors, floor)
    mean_error = (out.u.mean(0) - oracle.m).abs() / oracle.w.sqrt()
    assert mean_error.max() < 5 / math.sqrt(n)


def test_deterministic_coarse_to_fine_matches_the_full_resolution_sampler_in_law():
    """The same oracle through the generic full-resolution path (the wrapper) and coarse to
    fine: both solve the same ODE, so their variances agree to the Monte-Carlo noise."""
    process = _process().double()
    model, oracle = _oracle_model(process)
    ts = make_grid(process, kind="auto", budgets=[20, 20, 20])
    fine = sample(model, process, 3000, sampler="dpmpp-2m", ts=ts, seed=0, dtype=torch.float64)
    full = CountingDenoiser(oracle)
    u1 = torch.randn(3000, *SHAPE, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref = SAMPLERS["dpmpp-2m"](full, process, u1, ts)
    assert fine.nfe == full.nfe == 61
    rel = (fine.u.var(0) / ref.var(0)).mean() - 1
    assert abs(rel) < 0.02


class _Recorder(nn.Module):
    """A scale's denoiser that records the size of every input and the time it was asked at."""

    def __init__(self, inner, log, scale):
        super().__init__()
        self.inner, self.log, self.scale = inner, log, scale
        self.process = inner.process

    def forward(self, u, t):
        self.log.append((self.scale, tuple(u.shape[-2:]), float(t.max()), float(t.min())))
        return self.inner(u, t)


@pytest.mark.parametrize("sampler", ["dpmpp-2m-sde", "heun", "dopri5", "pc"])
def test_coarse_to_fine_never_runs_a_network_above_the_active_resolution(sampler):
    process = _process(finishing_times=[0.3, 0.6, 1.0]).double()
    oracle_model, _ = _oracle_model(process)
    log = []
    model = MultiScaleDenoiser(
        process, [_Recorder(d, log, s) for s, d in enumerate(oracle_model.scales)]
    )
    out = sample(model, process, 8, sampler=sampler, steps=12, dtype=torch.float64)
    assert out.u.shape == (8, *SHAPE)
    assert len(log) == out.nfe
    eps = 1e-12
    for scale, size, t_max, t_min in log:
        lo, hi = model.interval(scale)
        assert size == (16 >> scale, 16 >> scale)
        # the bands finer than this scale are pure noise at every time it is called
        assert lo - eps <= t_min and t_max <= hi + eps, (scale, t_min, t_max)
    # every scale ran; the coarsest first, and the full resolution only below T_0
    scales = [s for s, *_ in log]
    assert scales[0] == 2 and set(scales) == {0, 1, 2} and scales == sorted(scales, reverse=True)


def test_trained_backbones_run_at_their_scale_resolution():
    """A built multi-scale model's UNets see images of their scale only, when sampling."""
    cfg = load_config(QUICKSTART, ["data.size=64", "model.sigma_data=0.5"])
    assert cfg.model.multiscale is not None
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    seen = []
    for s, d in enumerate(model.scales):
        d.backbone.register_forward_pre_hook(lambda m, a, s=s: seen.append((s, a[0].shape[-1])))
    out = sample(model, process, 2, sampler="dpmpp-2m", steps=6)
    res = cfg.data.resolution
    assert out.images.shape == (2, 3, res, res) and out.nfe == 7
    assert {(s, r) for s, r in seen} == {(s, res >> s) for s in range(len(model.scales))}


def test_budgets_and_grid_splitting():
    assert equal_budgets(128, 4) == [32, 32, 32, 32]
    assert equal_budgets(10, 3) == [4, 3, 3]
    with pytest.raises(ValueError, match="needs >= 3 steps"):
        equal_budgets(2, 3)
    process = _process()
    model, _ = _oracle_model(process)
    ts = make_grid(process, kind="auto", budgets=[2, 3, 4])
    segments = split_grid(model, ts)
    assert [(s, len(seg) - 1) for s, seg in segments] == [(2, 2), (1, 3), (0, 4)]
    assert segments[0][1][-1] == segments[1][1][0] == 2 / 3
    with pytest.raises(ValueError, match="must contain the finishing time"):
        split_grid(model, torch.linspace(1, 0, 7, dtype=torch.float64)[:-1].sqrt())


def test_multiscale_loss_trains_one_scale_per_step_in_its_interval():
    cfg = load_config(
        QUICKSTART,
        [
            "data.size=64",
            "model.multiscale.scale_sampling=random",
            "model.multiscale.scale_weights=[0, 1, 3]",
        ],
    )
    data = build_data(cfg)
    process = build_process(cfg, data)
    model = build_denoiser(cfg, process, data)
    loss = build_loss(cfg, process, model)
    g = torch.Generator().manual_seed(0)
    scales = [loss.draw(4, g, step=k)["scale"] for k in range(400)]
    assert scales == [loss.draw(4, g, step=k)["scale"] for k in range(400)]  # a function of k
    counts = torch.bincount(torch.tensor(scales), minlength=3)
    assert counts[0] == 0 and 0.65 < counts[2] / 400 < 0.85
    x = torch.stack([data[i] for i in range(4)])
    for k in range(3):
        noise = loss.draw(4, g, step=k)
        s = noise["scale"]
        lo, hi = model.interval(s)
        assert ((noise["t"] >= lo) & (noise["t"] <= hi)).all()
        assert noise["eps"].shape[-1] == cfg.data.resolution >> s
        model.zero_grad(set_to_none=True)
        loss(model, x, noise).mean().backward()
        trained = [any(p.grad is not None for p in d.parameters()) for d in model.scales]
        assert trained == [i == s for i in range(3)]


def test_ema_follows_each_network_on_its_own_steps():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    model = nn.ModuleList([a, b])
    ema = EMA(model)
    before = [p.clone() for p in ema.module[1].parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(lambda k: 0.5 if k == 0 else 0.9, [True, True, False, False])
    assert ema.updates == [1, 1, 0, 0]
    for e, p in zip(ema.module[0].parameters(), a.parameters(), strict=True):
        torch.testing.assert_close(e, p - 0.5)  # 0.5 ema + 0.5 (ema + 1)
    for e, p0 in zip(ema.module[1].parameters(), before, strict=True):
        assert torch.equal(e, p0)
    ema.update(lambda k: 0.5 if k == 0 else 0.9)  # b's first update uses its own count, 0
    assert ema.updates == [2, 2, 1, 1]


TINY = tiny("data.size=64", steps=6, checkpoint_every=3)


def test_multiscale_training_resumes_bit_identically(tmp_path):
    """6 steps == 3 steps + resume to 6 (weights, EMA, counts), with the quick start's random
    scale draws (here scales 1, 0, 1, 0, 2, 1)."""
    _, b = assert_resume_exact(tmp_path, QUICKSTART, TINY, steps=6, stop_at=3, keys=["scales.2.*"])
    state = torch.load(b / "checkpoints" / "step_000006" / "state.pt", weights_only=True)
    cfg = load_config(QUICKSTART, TINY)
    data = build_data(cfg)
    model = build_denoiser(cfg, build_process(cfg, data), data)
    loss = build_loss(cfg, model.process, model)
    drawn = [loss.scale_for_step(k) for k in range(6)]
    assert len(set(drawn)) == 3  # every network trained, and resumed, at least once
    scale_of = [int(n.split(".")[1]) for n, _ in model.named_parameters()]
    assert state["ema_updates"] == [drawn.count(s) for s in scale_of]  # its own steps only
    assert main(["sample", str(b), "--n-samples", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_shared_network_across_scales(tmp_path):
    cfg = load_config(
        QUICKSTART,
        ["model.multiscale.share=true", "model.multiscale.channels=null", "model.sigma_data=0.5"],
    )
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    assert all(d.backbone is model.scales[0].backbone for d in model.scales)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in model.scales[0].backbone.parameters())
    out = sample(model, process, 2, sampler="dpmpp-2m", steps=3)
    assert out.images.shape == (2, *process.shape)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["process.basis={type: identity}"], "needs process.basis.type: haar"),
        (["process.schedule={type: vp-cosine}"], "multispeed"),
        (["model.multiscale.channels=[8, 8]"], "one entry per scale \\(3"),
        (["model.multiscale.scale_weights=[0, 0, 0]"], "must not all be 0"),
        (["sample.budgets=[4, 4]"], "sample.budgets needs one entry per scale"),
        (["loss.t_sampling=interval", "loss.t_interval=[0, 0.5]"], "does not apply"),
        (
            [
                "model.multiscale.share=true",
                "model.multiscale.channels=null",
                "model.unet.channel_mult=[1, 2, 2, 2]",
            ],
            "cannot halve",
        ),
    ],
)
def test_bad_multiscale_configs_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, overrides)


def test_wrapper_rejects_mismatched_scales():
    process = _process()
    model, _ = _oracle_model(process)
    with pytest.raises(ValueError, match="need 3 scale denoisers"):
        MultiScaleDenoiser(process, list(model.scales)[:2])
    with pytest.raises(ValueError, match="scale 1's denoiser must act on shape"):
        MultiScaleDenoiser(process, [model.scales[0], model.scales[0], model.scales[2]])
    from nudiff.bases import DCT
    from nudiff.schedules import VPCosine

    with pytest.raises(ValueError, match="haar basis with a multispeed or msf schedule"):
        MultiScaleDenoiser(Process(DCT(SHAPE), VPCosine()), list(model.scales))
