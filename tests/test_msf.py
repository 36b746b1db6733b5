"""MSF: the base + residual split of the Haar basis, its two-stage schedule, two-stage sampling
on the Gaussian oracle, stage networks that run at their own resolution, configs."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import QUICKSTART, assert_resume_exact, tiny
from nudiff.bases import Haar
from nudiff.build import build_denoiser, build_loss, build_process
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.models.multiscale import MultiScaleDenoiser, coarse_process, stages
from nudiff.oracle import DiagonalGaussian, GaussianOracle, field_model
from nudiff.process import Process
from nudiff.samplers import sample
from nudiff.schedules import MSF, BandWindows, MultiSpeed

SHAPE = (1, 16, 16)


def _process(levels=2, split=0.5, shape=SHAPE):
    basis = Haar(shape, levels)
    return Process(basis, MSF(basis.level_map() - 1, split))


def _oracle_model(process):
    """The exact two-stage model of a Gaussian random field: one oracle per stage."""
    data = field_model(process.shape, basis=process.basis)
    scales = []
    for d in stages(process)[1]:
        sub = coarse_process(process, d)
        _, h, w = sub.shape
        crop = DiagonalGaussian(sub.basis, data.mean[..., :h, :w], data.var[..., :h, :w])
        scales.append(GaussianOracle(sub, crop))
    return MultiScaleDenoiser(process, scales), GaussianOracle(process, data)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_base_and_residual_are_the_haar_split(levels):
    """The approximation band is the image pooled by 2^L (times 2^L), and the detail bands
    together are exactly x - up(base) with nearest up-sampling."""
    basis = Haar((3, 16, 16), levels).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    z = basis.forward(x)
    base = F.avg_pool2d(x, 2**levels)
    h = 16 >> levels
    torch.testing.assert_close(z[..., :h, :h], base * 2**levels)
    approx_only, details_only = torch.zeros_like(z), z.clone()
    approx_only[..., :h, :h] = z[..., :h, :h]
    details_only[..., :h, :h] = 0
    up = F.interpolate(base, scale_factor=2**levels, mode="nearest")
    torch.testing.assert_close(basis.inverse(approx_only), up)
    torch.testing.assert_close(basis.inverse(details_only), x - up)


def test_msf_schedule_is_two_hard_sequential_groups():
    process = _process(levels=2, split=0.3).double()
    base = process.basis.level_map() == 3
    t = torch.tensor([0.0, 0.1, 0.3, 0.31, 0.7, 1.0], dtype=torch.float64)
    lam = process.log_snr(t)
    hi, lo = process.schedule.log_snr_max, process.schedule.log_snr_min
    # the base is clean (frozen at log_snr_max) while the residual is generated ...
    assert (lam[:3][:, base] == hi).all()
    assert (lam[1:3][:, ~base] < hi).all() and (lam[2][~base] == lo).all()
    # ... and the residual is pure noise (frozen at log_snr_min) while the base is generated
    assert (lam[3:][:, ~base] == lo).all() and (lam[3:5][:, base] > lo).all()
    assert process.schedule.breakpoints() == [0.3]
    assert stages(process) == ([0.3, 1.0], [0, 2])
    # the base's stage is the approximation band alone, noised over [split, 1]
    sub = coarse_process(process, 2)
    assert sub.shape == (1, 4, 4) and isinstance(sub.schedule, BandWindows)
    assert (sub.schedule.starts, sub.schedule.ends) == ([0.3], [1.0])
    # multispeed keeps one stage per level
    haar = process.basis
    assert stages(Process(haar, MultiSpeed(haar.level_map() - 1))) == (
        [1 / 3, 2 / 3, 1.0],
        [0, 1, 2],
    )


def test_msf_schedule_errors():
    band = Haar(SHAPE, 2).level_map() - 1
    for split in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="split must be in"):
            MSF(band, split)
    with pytest.raises(ValueError, match="base band and at least one residual band"):
        MSF(torch.zeros(SHAPE, dtype=torch.long))
    # windows that end coarse-before-fine cannot drop resolution
    reversed_ = Process(
        Haar(SHAPE, 1), BandWindows(Haar(SHAPE, 1).level_map() - 1, [0.5, 0], [1, 0.5])
    )
    with pytest.raises(ValueError, match="end from the finest band to the coarsest"):
        stages(reversed_)


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "dpmpp-2m-sde", "heun"])
def test_two_stage_sampling_reproduces_the_band_variances(sampler):
    """Per Haar band, |sample variance / exact variance - 1| within 4 Monte-Carlo standard
    errors ``sqrt(2 / (n * band size))`` plus a 1% discretisation allowance; means too."""
    process = _process(levels=2, split=0.4).double()
    model, oracle = _oracle_model(process)
    n = 4000
    out = sample(model, process, n, sampler=sampler, budgets=[60, 60], seed=1, dtype=torch.float64)
    index, names = process.basis.groups()
    ratio = out.u.var(0) / oracle.w
    sizes = torch.bincount(index.flatten()).double()
    errors = torch.stack([ratio[index == g].mean() - 1 for g in range(len(names))]).abs()
    floor = (2 / (n * sizes)).sqrt()
    assert (errors < 4 * floor + 0.01).all(), (errors, floor)
    mean_error = (out.u.mean(0) - oracle.m).abs() / oracle.w.sqrt()
    assert mean_error.max() < 5 / math.sqrt(n)


def _tiny_msf(*extra):
    """The quick start's config as MSF on 16x16 shapes with 2 Haar levels (a 4x4 base)."""
    return load_config(
        QUICKSTART,
        [
            "data.size=64",
            "model.sigma_data=0.5",
            # the quick start's scale weights are for its 3 scales; MSF has 2
            "model.multiscale.scale_sampling=round-robin",
            "model.multiscale.scale_weights=null",
            "process.schedule={type: msf, split: 0.5}",
            "model.unet={channels: 16, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: []}",
            "model.multiscale.stages=[{unet: {channels: 8}}, {}]",
            "sample.budgets=[3, 2]",
            *extra,
        ],
    )


def _record_sizes(model):
    seen = []
    for s, d in enumerate(model.scales):
        d.backbone.register_forward_pre_hook(
            lambda m, a, s=s: seen.append((s, tuple(a[0].shape[-2:])))
        )
    return seen


def test_stage_networks_run_at_their_own_resolution():
    """Sampling and training: the base network only ever sees the 4x4 base, the light
    residual network the 16x16 image; the budgets are per stage (coarsest first)."""
    cfg = _tiny_msf()
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    assert model.dropped == [0, 2] and model.finishing_times == [0.5, 1.0]
    widths = [d.backbone.count_macs(16, 16) for d in model.scales]
    assert widths[0] < widths[1]  # the residual network is the lighter one
    seen = _record_sizes(model)
    out = sample(model, process, 3, sampler="dpmpp-2m-sde", budgets=[3, 2])
    assert out.images.shape == (3, 3, 16, 16) and out.nfe == 6
    assert seen == [(1, (4, 4))] * 3 + [(0, (16, 16))] * 3
    # the full-resolution wrapper at a base time calls the base network on its block only
    seen.clear()
    model(torch.randn(2, *process.shape), torch.tensor([0.8]))
    assert seen == [(1, (4, 4))]
    # training: round-robin over the stages, each on its own image size and interval
    loss = build_loss(cfg, process, model)
    x = torch.randn(4, *process.shape)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        seen.clear()
        noise = loss.draw(4, g, step)
        lo, hi = model.interval(noise["scale"])
        assert ((noise["t"] >= lo) & (noise["t"] <= hi)).all()
        loss(model, x, noise).mean().backward()
        assert seen == [(step % 2, (16, 16) if step % 2 == 0 else (4, 4))]


def test_a_stage_can_have_another_backbone():
    cfg = _tiny_msf(
        "model.multiscale.stages=[{}, {backbone: dit, dit: {patch_size: 1, width: 32, depth: 1}}]"
    )
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    kinds = [type(d.backbone).__name__ for d in model.scales]
    assert kinds == ["UNet", "DiT"]
    out = sample(model, process, 2, sampler="dpmpp-2m", budgets=[2, 2])
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["process.basis.type=dct"], "msf needs the haar basis"),
        (["process.schedule.levels=3"], "differs from process.basis.levels=2"),
        (["model.multiscale.stages=[{}]"], r"one entry per scale \(2 for msf"),
        (["model.multiscale.stages=[{unet: {width: 8}}, {}]"], r"stages\[0\].unet.width: unknown"),
        (["model.multiscale.share=true"], "takes no stages"),
        (["sample.budgets=[3, 2, 1]"], r"one entry per scale \(2, coarsest first\)"),
        (["process.schedule.split=1.0"], "split"),
        (
            ["model.multiscale.stages=[{}, {backbone: dit, dit: {patch_size: 3}}]"],
            r"4x4 scale \(model.multiscale.stages\[1\]\)",
        ),
    ],
)
def test_bad_msf_configs_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _tiny_msf(*overrides)


def test_schedule_levels_are_the_haar_levels():
    cfg = load_config(
        QUICKSTART,
        [
            "process.basis={type: haar}",
            "process.schedule={type: msf, levels: 1}",
            "model.multiscale.scale_weights=null",
        ],
    )
    # read, not written into the basis section: validation never changes a config
    assert cfg.process.basis.levels is None
    assert cfg.haar_levels() == 1 and cfg.scale_levels() == [0, 1]
    assert build_process(cfg).basis.levels == 1


def test_msf_training_resumes_bit_identically_and_samples(tmp_path):
    """4 steps == 2 steps + resume to 4 (weights and EMA); then ``nudiff sample`` with the
    config's per-stage budgets."""
    overrides = tiny(
        "data={name: shapes, resolution: 16, channels: 3, size: 64, max_shapes: 1}",
        "process.basis={type: haar, levels: 2}",
        "process.schedule={type: msf}",
        "model.sigma_data=0.5",
        "model.multiscale={stages: [{unet: {channels: 4}}, {}]}",
        "sample.budgets=[2, 1]",
    )
    _, b = assert_resume_exact(tmp_path, None, overrides, keys=["scales.1.*"])
    png = tmp_path / "s.png"
    assert main(["sample", str(b), "--n-samples", "2", "--out", str(png)]) == 0
    assert png.is_file()
