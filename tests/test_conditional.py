"""Conditional estimators: exact Gaussian-field oracles through the conditional samplers,
training and sampling end to end, and clear errors."""

import math
import re

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from conftest import DATA_DIR, QUICKSTART, ROOT, TINY_UNET, sets, tiny
from nudiff.cli import main
from nudiff.conditional.oracle import GaussianSROracle, multiscale_sr_oracle
from nudiff.config import ConfigError, load_config
from nudiff.run import sample_conditional

SHAPE = (1, 8, 8)


@pytest.mark.parametrize(
    ("estimator", "sampler", "steps", "options"),
    [
        ("cde", "dpmpp-2m", 60, None),
        ("cde", "ancestral", 500, None),
        ("cmde", "ancestral", 500, None),
        ("cmde", "euler-maruyama", 500, None),
        ("cmde", "pc", 500, {"corrector_steps": 1}),
        ("cdiffe", "pc", 500, {"corrector_steps": 1}),
    ],
)
def test_conditional_samplers_reproduce_the_fine_band_variance(estimator, sampler, steps, options):
    """Per input, the detail bands' sample variance over many samples equals the exact
    conditional variance (independent of y here) within the Monte-Carlo floor; CDE also
    reproduces the condition exactly. The Langevin corrector (pc) of the joint estimators
    scores with a fresh y_t at every call, like the predictor."""
    model = GaussianSROracle(estimator)
    g = torch.Generator().manual_seed(0)
    x = model.data.sample(4, g, dtype=torch.float64)
    y = model.task.degrade(x)
    k = 1000
    out = sample_conditional(
        model, y, k, sampler=sampler, steps=steps, options=options, seed=1, dtype=torch.float64
    )
    u = out.u.view(4, k, *SHAPE)
    h = SHAPE[1] // 2
    detail = torch.ones(SHAPE, dtype=torch.bool)
    detail[..., :h, :h] = False
    ratio = u.var(1)[:, detail] / model.oracle.w[detail]
    floor = math.sqrt(2 / (k * int(detail.sum()))) * math.sqrt(1 / 4)  # 4 inputs averaged
    assert abs(float(ratio.mean()) - 1) < 4 * floor + 0.02, float(ratio.mean())
    consistency = model.task.consistency(out.images, y.repeat_interleave(k, 0))
    if estimator == "cde":
        assert consistency.max() < 1e-10
    else:  # the joint estimators follow y through y_t: close, not exact; closer when y is slower
        bound = {"cmde": 1e-3, "cdiffe": 1e-2}[estimator]
        assert consistency.mean() < bound * y.var(), float(consistency.mean() / y.var())


def _sr_statistics(model, sampler, steps, k=500):
    """Detail-band variance over its exact value, and consistency MSE over ``var(y)``, of ``k``
    samples for each of 4 inputs (float64)."""
    data = model.scales[0].data if hasattr(model, "scales") else model.data
    w = model.scales[0].oracle.w if hasattr(model, "scales") else model.oracle.w
    x = data.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model.task.degrade(x)
    out = sample_conditional(model, y, k, sampler=sampler, steps=steps, seed=1, dtype=torch.float64)
    detail = torch.ones(SHAPE, dtype=torch.bool)
    detail[..., : SHAPE[1] // 2, : SHAPE[2] // 2] = False
    ratio = out.u.view(4, k, *SHAPE).var(1)[:, detail] / w[detail]
    consistency = model.task.consistency(out.images, y.repeat_interleave(k, 0))
    floor = math.sqrt(2 / (k * int(detail.sum()))) * math.sqrt(1 / 4)  # 4 inputs averaged
    return float(ratio.mean()), float(consistency.mean() / y.var()), floor, out


def test_conditional_multiscale_cde_is_exact_coarse_to_fine():
    """Through the multi-scale path (the coarse scale samples the approximation band alone,
    then the detail band joins at its finishing time) CDE reproduces y exactly and the detail
    bands' exact variance; the coarse scale takes half of the steps at a quarter of the size."""
    model = multiscale_sr_oracle("cde")
    ratio, consistency, floor, out = _sr_statistics(model, "dpmpp-2m", 60, k=1000)
    assert abs(ratio - 1) < 4 * floor + 0.02, ratio
    assert consistency < 1e-20
    assert model.dropped == [0, 1] and model.finishing_times == [0.5, 1.0]
    assert out.nfe == 61  # 30 steps per scale, plus the final denoising call


def test_conditional_multiscale_cmde_matches_the_single_scale_path():
    """CMDE on the multi-scale path has the statistics of the same process sampled at full
    resolution throughout (the coarse-to-fine split is exact), the exact detail variance up to
    Euler-Maruyama's bias, and a consistency error that shrinks as y diffuses slower."""
    ms = multiscale_sr_oracle("cmde")
    ratio, consistency, floor, _ = _sr_statistics(ms, "euler-maruyama", 500, k=150)
    assert abs(ratio - 1) < 4 * floor + 0.015, ratio
    _, single, _, _ = _sr_statistics(ms.scales[0], "euler-maruyama", 500, k=150)
    assert consistency == pytest.approx(single, rel=0.15)
    assert consistency < 0.03
    slow = multiscale_sr_oracle("cmde", y_log_snr_min=3.0)
    _, slower, _, _ = _sr_statistics(slow, "euler-maruyama", 200, k=50)
    assert slower < consistency / 5


def test_y_never_diffuses_faster_than_the_slowest_x_component():
    """On a multi-speed schedule (linear log-SNR per band) y's cosine alone would be noisier
    than x's coarse band early on; y's log-SNR is at least that band's at every time."""
    model = multiscale_sr_oracle("cmde").scales[0].ref
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, sigma = model.y_coefficients(t, torch.zeros(1, dtype=torch.float64))
    lam_y = (2 * (alpha / sigma).log()).flatten()
    lam_x = model.process.log_snr(t).flatten(1).amax(1)
    assert (lam_y >= lam_x - 1e-9).all()
    assert lam_y[-1] == pytest.approx(-1.0, abs=1e-6)  # y_log_snr_min: never fully noised
    assert (lam_y[:30] - lam_x[:30]).abs().max() < 1e-9  # early on, y follows x's coarse band


def test_vs_cmde_anneals_y_speed_from_x_to_its_target():
    """VS-CMDE: y's final log-SNR goes linearly from x's final one (y at the speed of x) to
    y_log_snr_min over anneal_steps, and is held there after; CMDE is at its target from the
    start; sampling (step None) uses the target."""
    base = GaussianSROracle("vs-cmde").ref
    model = type(base)(base.process, base.task, base.backbone, "vs-cmde", -1.0, anneal_steps=100)
    lo = model.lam_min  # x's final log-SNR: VP cosine's -15
    assert lo == pytest.approx(-15.0, abs=1e-4)
    t1 = torch.ones(1, dtype=torch.float64)
    steps = [(0, lo), (25, lo + (-1 - lo) / 4), (50, (lo - 1) / 2), (100, -1.0), (400, -1.0)]
    for step, want in [*steps, (None, -1.0)]:
        model.set_step(step)
        assert model.y_final == pytest.approx(want, abs=1e-9), step
        alpha, sigma = model.y_coefficients(t1, t1)
        assert float(2 * (alpha / sigma).log()) == pytest.approx(want, abs=1e-6), step
    model.set_step(0)  # at the speed of x: the same log-SNR as x at every time
    t = torch.linspace(0.05, 1, 20, dtype=torch.float64)
    alpha, sigma = model.y_coefficients(t, t)
    lam_x = model.process.log_snr(t).flatten()
    assert torch.allclose(2 * (alpha / sigma).log().flatten(), lam_x, atol=1e-6)
    cmde = type(base)(base.process, base.task, base.backbone, "cmde", -1.0, anneal_steps=100)
    cmde.set_step(0)
    assert cmde.y_final == -1.0


TINY = tiny(
    "data.size=64",
    "model.multiscale=null",
    "process.basis={type: identity}",
    "process.schedule={type: vp-cosine}",
    "model.sigma_data=0.5",
    "train.sample_every=2",
    "train.sample_n=4",
    steps=2,
)


@pytest.mark.parametrize(
    ("estimator", "task"), [("cde", "sr2"), ("cmde", "inpaint-boxes"), ("vs-cmde", "colorization")]
)
def test_train_and_sample_with_a_condition_end_to_end(
    tmp_path, capsys, monkeypatch, estimator, task
):
    monkeypatch.delenv("NUDIFF_LPIPS_WEIGHTS", raising=False)
    run = tmp_path / "run"
    overrides = [*TINY, f"conditional={{task: {task}, estimator: {estimator}, anneal_steps: 4}}"]
    assert main(["train", QUICKSTART, "--out", str(run), *sets(overrides)]) == 0
    assert (run / "samples" / "step_000002.png").is_file()
    truth = (np.random.default_rng(0).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "truth.npz", x_train=truth)
    out = tmp_path / "cond.png"
    assert (
        main(
            [
                "sample",
                str(run),
                "--condition",
                str(tmp_path / "truth.npz"),
                "--per-input",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "3 inputs x 2 samples" in text and "PSNR" in text and "no LPIPS weights" in text
    w, h = Image.open(out).size
    assert h > 3 * 16 and w > 4 * 16  # condition, 2 samples, truth per row
    if task == "sr2":  # LPIPS with local weights (random here: the plumbing, not the values)
        from nudiff.eval.lpips import LPIPS

        lp = LPIPS()
        for w in lp.lins:
            w.data.uniform_()
        safetensors.torch.save_file(lp.state_dict(), str(tmp_path / "lpips.safetensors"))
        args = ["sample", str(run), "--condition", str(tmp_path / "truth.npz"), "--out", str(out)]
        assert main([*args, "--lpips", str(tmp_path / "lpips.safetensors")]) == 0
        assert re.search(r"LPIPS \d+\.\d{3}", capsys.readouterr().out)
    if task == "sr2":  # a low-resolution image alone is a condition
        Image.fromarray(truth[0, ::2, ::2]).save(tmp_path / "low.png")
        assert (
            main(["sample", str(run), "--condition", str(tmp_path / "low.png"), "--out", str(out)])
            == 0
        )
    if task == "colorization":  # so is a grey image
        Image.fromarray(truth[0, ..., 0]).save(tmp_path / "grey.png")
        assert (
            main(["sample", str(run), "--condition", str(tmp_path / "grey.png"), "--out", str(out)])
            == 0
        )


def test_multiscale_conditional_model_trains_resumes_and_samples(tmp_path, capsys, monkeypatch):
    """A conditional multi-scale model (three scales, x's stds measured on data) trains one
    scale per step, reloads from its run folder with its measured stds, and samples coarse to
    fine from low-resolution inputs at every scale's resolution."""
    monkeypatch.delenv("NUDIFF_LPIPS_WEIGHTS", raising=False)
    run = tmp_path / "run"
    overrides = [
        *[s for s in TINY if not s.startswith(("process.", "model.multiscale", "model.sigma"))],
        "process.basis={type: haar, levels: 2}",
        "process.schedule={type: multispeed}",
        "model.multiscale={share: false}",
        "model.sigma_data=data",
        "conditional={task: sr2, estimator: cmde}",
    ]
    assert main(["train", QUICKSTART, "--out", str(run), *sets(overrides)]) == 0
    from nudiff.conditional.estimators import ConditionalMultiScale
    from nudiff.run import load_run

    cfg, model = load_run(run)
    assert isinstance(model, ConditionalMultiScale) and len(model.scales) == 3
    stds = [scale.data_std for scale in model.scales]
    assert stds[0][..., :4, :4].mean() > 2 * stds[0][..., 8:, 8:].mean()  # coarse bands larger
    assert torch.equal(stds[1], stds[0][..., :8, :8]) and torch.equal(stds[2], stds[0][..., :4, :4])
    truth = (np.random.default_rng(0).random((2, 16, 16, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "truth.npz", x_train=truth)
    out = tmp_path / "cond.png"
    args = ["sample", str(run), "--condition", str(tmp_path / "truth.npz"), "--out", str(out)]
    assert main([*args, "--per-input", "2", "--steps", "6"]) == 0
    assert "2 inputs x 2 samples" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["conditional={estimator: cmdx}"], "conditional.estimator: must be"),
        (
            ["data.resolution=30", "model.unet.channel_mult=[1]", "conditional={task: sr4}"],
            "x4 super-resolution needs H and W divisible by 4, got 30x30",
        ),
        (["data.channels=1", "conditional={task: colorization}"], "colorization needs RGB"),
        (
            [
                "conditional={task: sr2, estimator: cdiffe}",
                "process.basis={type: haar, levels: 1}",
                "process.schedule={type: multispeed}",
            ],
            "cdiffe needs a scalar process.schedule",
        ),
        (["conditional={task: sr2, estimator: cmde, y_log_snr_min: -20}"], None),
        (["conditional={task: sr2}", "model.prediction=eps"], "take model.prediction: edm"),
        (["conditional={task: sr2}", "loss.weighting=min-snr"], "loss.weighting must be uniform"),
    ],
)
def test_bad_conditional_configs_are_clear_errors(overrides, message):
    base = [s for s in TINY if not s.startswith("model.sigma_data")] + ["model.sigma_data=0.5"]
    if message is None:  # caught when the model is built: y must diffuse slower than x
        from nudiff.build import build_denoiser, build_process

        cfg = load_config(QUICKSTART, [*base, *overrides])
        with pytest.raises(ValueError, match="y must diffuse slower than x"):
            build_denoiser(cfg, build_process(cfg))
        return
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, [*base, *overrides])


MNIST = DATA_DIR / "mnist.npz"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_conditional_benchmark_smoke_run_writes_its_table(tmp_path, monkeypatch):
    """``nudiff bench conditional`` at a tiny budget: the issue's JSON keys, a naive baseline
    row, feature FD beside the unpaired FD, and LPIPS reported as absent without weights."""
    import json

    monkeypatch.delenv("NUDIFF_LPIPS_WEIGHTS", raising=False)
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    overrides = [
        TINY_UNET,
        "train.batch_size=8",
        "train.sample_every=0",
        "train.checkpoint_every=2",
        "sample.steps=3",
    ]
    out = tmp_path / "bench"
    args = ["bench", "conditional", "--tasks", "inpaint-center", "--train-steps", "2"]
    args += [
        "--n-images",
        "40",
        "--per-input",
        "2",
        "--feature-train-steps",
        "3",
        "--out",
        str(out),
    ]
    args += ["--json", str(tmp_path / "c.json"), *sets(overrides)]
    assert main(args) == 0
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["estimator"] for r in rows] == ["naive", "cde", "cmde"]
    for r in rows:
        assert r["task"] == "inpaint-center" and r["lpips"] is None
        for key in ("psnr", "ssim", "consistency", "diversity", "fd", "fd_unpaired"):
            assert math.isfinite(r[key]), (key, r)
    assert rows[0]["n_samples"] == 40 and rows[1]["n_samples"] == rows[2]["n_samples"] == 80
    assert rows[0]["consistency"] < 1e-12 and rows[0]["diversity"] == 0
    assert rows[1]["train_steps"] == rows[2]["train_steps"] == 2
    assert (out / "inpaint-center_cmde" / "comparison.png").is_file()
    assert main(args) == 0  # a second call reuses the trained runs and the feature net
