"""The Python front door: nudiff.train, nudiff.load, Run.sample, grids, PIL images, .npz."""

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import nudiff
from conftest import tiny_quickstart
from nudiff.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return nudiff.train("quickstart", out, tiny_quickstart(), device="cpu")


def test_train_returns_the_loaded_run(run):
    assert run.summary["steps"] == 4 and run.summary["stopped"] == "completed"
    assert run.device == torch.device("cpu") and run.config.data.resolution == 16
    assert run.process is run.model.process and "16x16" in repr(run)


def test_sample_matches_the_command_line(run, tmp_path):
    images = run.sample(5, steps=3, seed=2, batch_size=2)
    assert images.shape == (5, 3, 16, 16) and images.device.type == "cpu"
    assert images.min() >= -1 and images.max() <= 1
    npz = tmp_path / "cli.npz"
    args = ["sample", str(run.path), "--n-samples", "5", "--steps", "3", "--seed", "2"]
    assert (
        main([*args, "--device", "cpu", "--out", str(tmp_path / "g.png"), "--npz", str(npz)]) == 0
    )
    nudiff.save_npz(images, tmp_path / "api.npz")
    np.testing.assert_array_equal(np.load(npz)["x_train"], np.load(tmp_path / "api.npz")["x_train"])


def test_load_follows_the_device_rule_and_takes_overrides(run):
    loaded = nudiff.load(run.path)  # device="auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert loaded.device.type == next(loaded.model.parameters()).device.type == expected
    raw = nudiff.load(run.path, "cpu", ema=False, overrides=["sample.steps=2"])
    assert raw.config.sample.steps == 2
    with pytest.raises(ValueError, match="unknown device"):
        nudiff.load(run.path, "tpu")
    with pytest.raises(ValueError, match="not a conditional run"):
        raw.restore(torch.zeros(1, 3, 8, 8))


def test_grids_pil_images_and_npz(run, tmp_path):
    images = torch.linspace(-1, 1, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    path = run.save_grid(images, tmp_path / "sub" / "grid.png")
    with Image.open(path) as grid:
        assert grid.size[0] >= 64  # small images enlarged
    pictures = nudiff.to_pil(images)
    assert [p.mode for p in pictures] == ["RGB", "RGB"] and pictures[0].size == (4, 4)
    assert nudiff.to_pil(images[:, :1])[0].mode == "L"
    saved = np.load(nudiff.save_npz(images, tmp_path / "x.npz"))["x_train"]
    assert saved.shape == (2, 4, 4, 3) and saved.dtype == np.uint8
    np.testing.assert_array_equal(saved[1], np.asarray(pictures[1]))
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        nudiff.to_pil(images[0])


def test_import_nudiff_is_light_and_train_is_the_function():
    code = "import sys, nudiff; print('torch' in sys.modules, nudiff.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", nudiff.__version__]
    importlib.import_module("nudiff.training.trainer")  # the package does not shadow train()
    assert callable(nudiff.train) and nudiff.train.__module__ == "nudiff.api"
    assert "quickstart" in nudiff.config_names()
