"""Time grids optimised on the exact Gaussian surrogate: better than ``auto`` on the surrogate
and on spectra it was not fitted to, fitted once per run and setting, refused where it does
not apply."""

import copy
import json

import pytest
import torch

from conftest import sets, tiny
from nudiff.bases import DCT, Haar
from nudiff.cli import main
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.samplers import SAMPLERS, make_grid, sample
from nudiff.samplers import optimized as opt
from nudiff.samplers.surrogate import sampler_map
from nudiff.schedules import MultiSpeed, VPCosine

SHAPE = (1, 8, 8)


def _oracle(exponent=2.0, multispeed=False):
    basis = Haar(SHAPE, 2) if multispeed else DCT(SHAPE)
    schedule = MultiSpeed(basis.level_map() - 1) if multispeed else VPCosine()
    process = Process(basis, schedule).double()
    return GaussianOracle(process, field_model(SHAPE, exponent, basis=basis))


def _variance_error(oracle, sampler, ts, options=None):
    """Mean over basis groups of |output variance / data variance - 1| (closed form)."""
    g, _ = sampler_map(SAMPLERS[sampler], oracle, oracle.process, ts, options)
    ratio = g**2 * oracle.process.prior_variance()[0] / oracle.w
    index, names = oracle.process.basis.groups()
    return torch.stack([(ratio[index == k].mean() - 1).abs() for k in range(len(names))]).mean()


@pytest.mark.parametrize("multispeed", [False, True])
def test_the_optimized_grid_beats_auto_on_the_surrogate_and_on_other_spectra(multispeed):
    oracle = _oracle(multispeed=multispeed)
    ts, info = opt.optimize_grid(oracle, "unipc", 9)
    auto = make_grid(oracle.process, 9, "auto")
    assert ts.shape == auto.shape and ts[0] == auto[0] and ts[-1] == auto[-1]
    assert (ts[1:] < ts[:-1]).all()
    assert info["kl"] < 0.2 * info["kl_auto"]
    assert info["kl"] == pytest.approx(opt.grid_kl(SAMPLERS["unipc"], oracle, ts))
    # a flatter spectrum than the one it was fitted to: still better than auto
    other = _oracle(exponent=1.5, multispeed=multispeed)
    assert _variance_error(other, "unipc", ts) < 0.7 * _variance_error(other, "unipc", auto)


def test_budgets_keep_the_breakpoints_and_the_interval_counts():
    oracle = _oracle(multispeed=True)
    budgets = [3, 3, 3]
    ts, _ = opt.optimize_grid(oracle, "dpmpp-2m", None, budgets=budgets)
    auto = make_grid(oracle.process, None, "auto", budgets=budgets)
    assert torch.equal(ts[[0, 3, 6, 9]], auto[[0, 3, 6, 9]])


def test_stochastic_samplers_are_refused():
    with pytest.raises(ValueError, match="deterministic fixed-grid sampler, not 'ancestral'"):
        opt.optimize_grid(_oracle(), "ancestral", 5)
    assert opt.deterministic("ddim", {"eta": 0}) and not opt.deterministic("ddim", {"eta": 1})
    assert not opt.deterministic("dopri5") and opt.deterministic("heun")


def test_a_gaussian_denoiser_samples_with_its_optimized_grid(tmp_path, monkeypatch):
    """A fresh denoiser (zero output layer) is the exact denoiser of its data moments, so its
    surrogate is exact; the grid is fitted once, kept as JSON and read back."""
    from conftest import woken_model

    cfg, model = woken_model(["process.basis={type: dct}", "data.resolution=8"])
    for p in model.backbone.parameters():
        torch.nn.init.zeros_(p)  # F = 0: the Gaussian denoiser of the data moments
    process = model.process
    opt._MEMO.clear()
    grid = opt.optimized_grid(model, process, "dpmpp-2m", 6, cache_dir=tmp_path)
    files = list(tmp_path.glob("dpmpp-2m-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["kl"] <= record["kl_auto"] and record["ts"] == grid.tolist()
    out = sample(model, process, 4, sampler="dpmpp-2m", steps=6, grid="optimized", seed=1)
    ref = sample(model, process, 4, sampler="dpmpp-2m", ts=grid, seed=1)
    assert torch.equal(out.u, ref.u)
    # a new process reads the file instead of optimising again
    opt._MEMO.clear()
    monkeypatch.setattr(opt, "optimize_grid", lambda *a, **k: pytest.fail("not cached"))
    again = opt.optimized_grid(model, copy.deepcopy(process), "dpmpp-2m", 6, cache_dir=tmp_path)
    assert torch.equal(again, grid)


def test_the_command_line_samples_with_an_optimized_grid(tmp_path, capsys):
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: shapes}\n")
    overrides = tiny("data.resolution=16", "data.size=16", "process.basis={type: dct}", steps=2)
    assert main(["train", str(config), "--out", str(run), *sets(overrides)]) == 0
    args = ["sample", str(run), "--n-samples", "2", "--out", str(tmp_path / "s.png")]
    assert main([*args, "--sampler", "unipc", "--steps", "5", "--grid", "optimized"]) == 0
    assert len(list((run / "grids").glob("unipc-*.json"))) == 1
    capsys.readouterr()
    assert main([*args, "--sampler", "euler-maruyama", "--grid", "optimized"]) == 2
    err = capsys.readouterr().err
    assert "optimized needs a deterministic fixed-grid sampler" in err
    assert "not sample.sampler: euler-maruyama" in err
