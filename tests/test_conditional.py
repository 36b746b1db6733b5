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
from nudiff.conditional.oracle import GaussianSROracle
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["conditional={estimator: cmdx}"], "conditional.estimator: must be"),
        (
            ["data.resolution=30", "model.unet.channel_mult=[1]", "conditional={task: sr4}"],
            "x4 super-resolution needs H and W divisible by 4, got 30x30",
        ),
        (["data.channels=1", "conditional={task: colorization}"], "colorization needs RGB"),
        (["model.sigma_data=data", "conditional={task: sr2}"], "numeric model.sigma_data"),
        (["conditional={task: sr2, estimator: cmde, y_log_snr_min: -20}"], None),
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
