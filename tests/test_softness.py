"""One model over a range of GUD softness: per-batch draws, the process of each batch, config
checks, exact resume, sampling at a softness inside the trained range; the softness benchmark
across bases (rows, table, figure, reuse, unknown bases)."""

import json
import math

import pytest
import torch

from conftest import DATA_DIR, ROOT, TINY_UNET, assert_resume_exact, data_only_config, sets, tiny
from nudiff.bases import Haar
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.losses import DenoisingLoss, SoftnessRange
from nudiff.models.denoiser import Denoiser
from nudiff.process import Process
from nudiff.schedules import SoftConditioning, VPCosine
from test_denoiser_loss import Constant

TINY = tiny(
    "data={name: shapes, resolution: 8, channels: 1, size: 64, max_shapes: 1}",
    "process={basis: {type: haar, levels: 2}, schedule: {type: soft, softness: 1.0}}",
    "loss.softness={min: 0.5, max: .inf}",
    "model.sigma_data=0.5",
)


def _process(softness=1.0):
    haar = Haar((1, 8, 8), 2)
    return Process(haar, SoftConditioning(haar.label(), softness)).double()


def test_with_softness_is_the_schedule_built_at_that_softness():
    process = _process(1.0)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    for s in (0.3, 2.0, math.inf):
        moved = process.schedule.with_softness(s)
        torch.testing.assert_close(moved.log_snr(t), _process(s).schedule.log_snr(t))
        assert moved.softness == s


def test_each_batch_is_noised_and_denoised_at_its_drawn_softness():
    process = _process(1.0)
    soft = SoftnessRange(process, (0.5, math.inf), seed=3)
    loss = DenoisingLoss(process, pieces=[soft])
    draws = [soft.softness_for_step(k) for k in range(2000)]
    assert draws == [soft.softness_for_step(k) for k in range(2000)]  # a function of the step
    a = torch.tensor([1 / s for s in draws])
    assert (a >= 0).all() and (a <= 2).all()
    assert abs(a.mean().item() - 1.0) < 0.05 and abs(a.var().item() - 4 / 12) < 0.03
    noise = loss.draw(4, torch.Generator().manual_seed(0), step=7)
    assert noise["softness"] == draws[7] and isinstance(noise["softness"], float)
    backbone = Constant()
    model = Denoiser(process, backbone).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    noise = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in noise.items()}
    loss(model, x, noise)
    # the network saw the conditioning of the process at the drawn softness, not the model's
    at = _process(draws[7])
    want = Denoiser(at, Constant()).double()
    t = noise["t"]
    torch.testing.assert_close(backbone.seen[0][1], want.condition(t, at.log_snr(t, x)))
    assert not torch.allclose(backbone.seen[0][1], model.condition(t, process.log_snr(t, x)))
    with pytest.raises(ValueError, match="soft-conditioning schedule"):
        SoftnessRange(Process(Haar((1, 8, 8), 2), VPCosine()), (0.5, 2.0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["process.schedule={type: multispeed}"], "loss.softness needs process.schedule.type"),
        (["loss.softness={min: 2, max: 1}"], "min <= max"),
        (["process.schedule.softness=0.25"], "outside the range the model is trained on"),
        (["model.noise_conditioning=t"], "log_snr_groups"),
        (["loss.softness={min: 0, max: 1}"], "greater than 0"),
    ],
)
def test_bad_softness_configs_are_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data_only_config(tmp_path), [*TINY, *overrides])


def test_softness_range_training_resumes_exactly_and_samples_inside_the_range(tmp_path, capsys):
    _, b = assert_resume_exact(tmp_path, None, TINY)
    run, png = str(b), str(tmp_path / "s.png")
    for softness in ("0.7", ".inf"):
        sets = ["--set", f"process.schedule.softness={softness}"]
        assert main(["sample", run, "--n-samples", "2", "--out", png, *sets]) == 0
    capsys.readouterr()
    sets = ["--set", "process.schedule.softness=0.3"]
    assert main(["sample", run, "--n-samples", "2", "--out", png, *sets]) == 2
    assert "outside the range the model is trained on" in capsys.readouterr().err


# ------------------------------------------------------------------ the benchmark across bases
MNIST = DATA_DIR / "mnist.npz"


def _feature_net(tmp_path) -> str:
    """A feature network file of one training step on noise (the scores are not looked at)."""
    import numpy as np

    from nudiff.eval.features import save_feature_net, train_feature_net

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)
    net, _ = train_feature_net(images, np.arange(16) % 2, steps=1, batch_size=8, holdout=0)
    save_feature_net(net, tmp_path / "features.safetensors")
    return str(tmp_path / "features.safetensors")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_softness_benchmark_compares_bases_at_equal_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the config reads $NUDIFF_DATA
    out, js, png = tmp_path / "bench", tmp_path / "s.json", tmp_path / "s.png"
    extra = [TINY_UNET, "train.batch_size=4", "sample.steps=2", "process.prior.fit_samples=64"]
    extra += ["model.stats_samples=64"]
    args = ["bench", "softness", "--basis", "pixel,fourier", "--train-steps", "2"]
    args += ["--values", "1,inf", "--n-samples", "8", "--n-elbo", "2", "--times", "2"]
    args += ["--n-ode", "1", "--ode-tolerance", "0.01", "--features", _feature_net(tmp_path)]
    args += ["--out", str(out), "--json", str(js)]
    assert main([*args, "--plot", str(png), *sets(extra)]) == 0
    r = json.loads(js.read_text())
    assert r["bases"] == ["pixel", "fourier"] and r["budget"] == "2 steps"
    got = [(row["basis"], row["softness"]) for row in r["rows"]]
    assert got == [("pixel", 1.0), ("pixel", math.inf), ("fourier", 1.0), ("fourier", math.inf)]
    for row in r["rows"]:
        assert row["steps"] == 2 and row["steps_per_s"] > 0 and row["n_samples"] == 8
        assert all(math.isfinite(row[k]) for k in ("elbo_bpd", "ode_bpd", "fd", "fd_se"))
    runs = r["runs"]
    assert (runs["pixel"]["label"], runs["fourier"]["label"]) == ("col", "frequency")
    assert runs["pixel"]["prior"] == runs["fourier"]["prior"] == "data"
    assert runs["pixel"]["basis_type"] == "identity"
    table = r["table"]
    assert table.startswith("| basis | softness | ELBO (bits/dim) | PF-ODE NLL (bits/dim) | FD")
    row = r["rows"][3]
    assert f"| fourier | inf | {row['elbo_bpd']:.3f} +- {row['elbo_se']:.3f} |" in table
    assert "| pixel | col | data | 2 |" in table and table in capsys.readouterr().out
    for basis in ("pixel", "fourier"):
        assert (out / basis / "train_summary.json").is_file()
        assert (out / basis / "softness_inf.png").is_file()
    assert (out / "softness_1.png").is_file() and png.stat().st_size > 1000
    # a second call reuses the training and the scores
    assert main([*args, *sets(extra)]) == 0
    assert "reusing the scores of softness inf" in capsys.readouterr().out
    assert json.loads(js.read_text())["rows"] == r["rows"]


def test_softness_benchmark_unknown_basis_is_a_clear_error(capsys):
    assert main(["bench", "softness", "--basis", "pixel,wavelet", "--train-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--basis: unknown 'wavelet'; known: pixel, pca, dct, fourier, haar" in err
    with pytest.raises(SystemExit):  # one budget: steps or minutes
        main(["bench", "softness", "--train-steps", "2", "--train-minutes", "1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_softness_benchmark_table_and_figure_draw_a_result(tmp_path):
    from nudiff.bench.softness import markdown_table, plot

    rows = [
        {"basis": b, "softness": s, "elbo_bpd": e, "elbo_se": 0.02, "ode_bpd": e - 0.2}
        | {"ode_se": 0.05, "fd": fd, "fd_se": 1.0}
        for b, s, e, fd in [("dct", 0.5, 3.5, 14.1), ("dct", math.inf, 3.47, 18.2)]
        + [("pixel", 0.5, 10.9, 22.5), ("pixel", math.inf, 10.3, 23.9)]
    ]
    runs = {b: {"label": "x", "prior": "data", "steps": 400} for b in ("dct", "pixel")}
    for b in runs:
        runs[b].update(steps_per_s=1.5, train_seconds=270.0)
    result = {"rows": rows, "runs": runs, "n_samples": 500, "data_vs_data_fd": 0.7}
    table = markdown_table(result)
    assert "| dct | inf | 3.470 +- 0.020 | 3.270 +- 0.050 | 18.20 +- 1.00 |" in table
    assert "| pixel | x | data | 400 | 1.50 | 4.5 |" in table and "FD (n = 500)" in table
    plot({**result, "budget": "400 steps"}, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
