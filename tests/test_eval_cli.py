"""``nudiff eval`` and ``nudiff features`` end to end on a tiny run and tiny data."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import QUICKSTART, sets, tiny_quickstart
from nudiff.cli import main
from nudiff.eval.commands import fit_images


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    args = ["train", QUICKSTART, "--out", str(run), *sets(tiny_quickstart("data.holdout=8"))]
    assert main(args) == 0
    return run


def test_eval_nll_on_the_held_out_split(tiny_run, tmp_path, capsys):
    out = tmp_path / "nll.json"
    args = [
        "eval",
        "nll",
        str(tiny_run),
        "--n-images",
        "3",
        "--batch-size",
        "3",
        "--json",
        str(out),
    ]
    assert main([*args, "--rtol", "1e-2", "--atol", "1e-2"]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 3 and result["nfe_mean"] > 0 and result["stderr"] > 0
    assert 0 < result["nll_bpd"] < 20
    assert "nll_bpd" in capsys.readouterr().out
    assert main([*args, "--n-images", "9"]) == 2
    assert "exceeds the run's 8 held-out images" in capsys.readouterr().err


def test_eval_nll_on_an_npz(tiny_run, tmp_path):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.integers(0, 256, (5, 12, 12), dtype=np.uint8))
    out = tmp_path / "nll.json"
    args = [
        "eval",
        "nll",
        str(tiny_run),
        "--data",
        str(data),
        "--n-images",
        "2",
        "--json",
        str(out),
    ]
    assert main([*args, "--divergence", "hutchinson", "--rtol", "1e-2", "--atol", "1e-2"]) == 0
    assert json.loads(out.read_text())["n"] == 2


def test_fit_images_keeps_pixels_and_converts_layouts():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = fit_images(grey, (1, 32, 32))
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.uint8
    assert out[:, 0, 2:30, 2:30].equal(torch.from_numpy(grey)) and out[:, :, :2].eq(0).all()
    rgb = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert fit_images(rgb, (3, 8, 8)).equal(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="uint8"):
        fit_images(grey.astype(np.float32), (1, 28, 28))


def test_export_features_and_fd_end_to_end(tiny_run, tmp_path, capsys):
    """Built-in shapes -> labelled npz -> feature network -> FD of a run and of two files."""
    config = QUICKSTART
    train, ref = tmp_path / "train.npz", tmp_path / "ref.npz"
    res = ["--set", "data.resolution=16"]
    assert main(["data", "export", config, "--out", str(train), "--n-images", "96", *res]) == 0
    fresh = [*res, "--set", "data.seed=1"]  # images the run never saw
    assert main(["data", "export", config, "--out", str(ref), "--n-images", "40", *fresh]) == 0
    with np.load(train) as f:
        assert f["x_train"].shape == (96, 16, 16, 3) and f["y_train"].max() < 18
    feats = tmp_path / "features.safetensors"
    args = ["features", "train", "--data", str(train), "--out", str(feats), "--train-steps", "3"]
    assert main([*args, "--batch-size", "16"]) == 0
    out = tmp_path / "fd.json"
    common = ["--ref", str(ref), "--features", str(feats), "--json", str(out)]
    assert main(["eval", "fd", str(tiny_run), "--n-samples", "8", "--steps", "3", *common]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 8 and result["fd"] >= 0 and result["nfe"] == 4
    assert main(["eval", "fd", "--samples", str(train), "--n-samples", "40", *common]) == 0
    assert json.loads(out.read_text())["n"] == 40
    capsys.readouterr()
    assert main(["eval", "fd", "--n-samples", "8", *common]) == 2
    assert "exactly one of a run" in capsys.readouterr().err


def test_eval_nll_with_the_variational_bound(tiny_run, tmp_path, capsys):
    out = tmp_path / "elbo.json"
    args = ["eval", "nll", str(tiny_run), "--n-images", "4", "--method", "elbo", "--times", "8"]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "elbo" and result["n_times"] == 8 and result["nfe_mean"] == 8
    assert result["n"] == 4 and math.isfinite(result["nll_bpd"]) and result["nll_bpd"] > 0
    assert "method elbo" in capsys.readouterr().out
