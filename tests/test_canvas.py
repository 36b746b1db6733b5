"""Sampling a square-trained pixel-space model on any H x W canvas (``--resolution HxW``):
LEGO (every stacking), DiT and the UNet; the square canvas gives the trained network's
output; impossible canvases and unsupported models are one-line errors. LEGO's ``pr`` and
``u`` stackings also train and resume exactly."""

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

import nudiff
from conftest import TINY_UNET, assert_resume_exact, tiny, train_args
from nudiff.cli import main
from nudiff.cli.vocabulary import ImageSize
from nudiff.config import ConfigError, load_config
from nudiff.data import make_grid
from nudiff.models.lego import LEGO
from nudiff.run import at_resolution, load_run, sample_run

PIXELS = [
    "data.resolution=16",
    "data.size=32",
    "process.basis.type=identity",
    "process.schedule={type: vp-cosine}",
    "model.stats_samples=16",
]
BACKBONES = {
    "unet": [TINY_UNET],
    "dit": ["model.backbone=dit", "model.dit={patch_size: 4, width: 16, depth: 1, heads: 2}"],
}


def lego(stacking: str) -> list[str]:
    """A tiny LEGO run of 16x16 images with the ``stacking`` bricks (regions of 16, 8 and 4
    pixels for ``pr``; 16, 4 and 16 for ``u``)."""
    bricks = f"{{stacking: {stacking}, width: 16, depth: 1, patch: 4, heads: 2}}"
    return tiny(
        *PIXELS,
        "model.backbone=lego",
        f"model.lego={bricks}",
        steps=2,
        checkpoint_every=1,
        batch_size=4,
        sample_steps=2,
        unet=False,
    )


def same_on_the_square(run) -> None:
    """The network of the run loaded for a 16x48 canvas answers a 16x16 input as the run's
    own (square) network does: the same weights, the same regions and positions."""
    cfg, wide = load_run(run, resolution=(16, 48), device="cpu")
    _, square = load_run(run, device="cpu")
    assert (cfg.data.resolution, cfg.data.width) == (16, 48)
    assert wide.data_mean.shape == (3, 16, 48) and square.data_mean.shape == (3, 16, 16)
    net = square.backbone
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    c = torch.randn(2, net.noise_features, generator=g)
    with torch.no_grad():
        assert torch.equal(wide.backbone(x, c), net(x, c))


def sample_cli(run, canvas: str, tmp_path, capsys) -> np.ndarray:
    """``nudiff sample RUN --resolution CANVAS`` of 2 images: their uint8 array, after checking
    the PNG grid (one image a row for these wide or tall canvases' 2 images)."""
    png, npz = tmp_path / f"{canvas}.png", tmp_path / f"{canvas}.npz"
    args = ["sample", str(run), "--resolution", canvas, "--n-samples", "2", "--steps", "2"]
    assert main([*args, "--out", str(png), "--npz", str(npz)]) == 0, capsys.readouterr().err
    images = np.load(npz)["x_train"]
    h, w = images.shape[1:3]
    nrow = 1 if w > h else 2
    with Image.open(png) as grid:  # 2-pixel padding, images enlarged to at least 64 pixels
        f = max(1, 64 // max(h, w))
        rows = 2 // nrow
        assert grid.size == (nrow * (f * w + 2) + 2, rows * (f * h + 2) + 2)
    return images


@pytest.mark.parametrize("stacking", ["pr", "u"])
def test_lego_stacking_trains_resumes_and_samples_on_any_canvas(tmp_path, capsys, stacking):
    """2 steps == 1 step + resume to 2; then 16x48 and 48x16 canvases from 16x16 training,
    the trained regions tiling them; a canvas they do not tile is a clear error."""
    _, run = assert_resume_exact(tmp_path, None, lego(stacking), steps=2, stop_at=1)
    regions = {"pr": [16, 8, 4], "u": [16, 4, 16]}[stacking]
    assert [b.region for b in load_run(run, device="cpu")[1].backbone.bricks] == regions
    assert sample_cli(run, "16x48", tmp_path, capsys).shape == (2, 16, 48, 3)
    tall = sample_run(run, 2, device="cpu", resolution=(48, 16), steps=2)
    assert tall.images.shape == (2, 3, 48, 16) and torch.isfinite(tall.images).all()
    same_on_the_square(run)
    cfg, model = load_run(run, resolution=(48, 16), device="cpu")
    assert isinstance(model.backbone, LEGO)
    assert [b.region for b in model.backbone.bricks] == regions
    with pytest.raises(ConfigError, match="region 16 must divide the image size 16x40"):
        load_run(run, resolution=(16, 40), device="cpu")


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_unet_and_dit_sample_on_any_canvas(tmp_path, capsys, backbone):
    """One training step at 16x16; then a 16x48 canvas from the command line, a 48x16 one from
    the Python front door, the square canvas's network unchanged; a canvas the UNet's
    downsampling or DiT's patches do not divide is a clear error."""
    overrides = tiny(*PIXELS, *BACKBONES[backbone], steps=1, checkpoint_every=1, unet=False)
    run = tmp_path / "run"
    assert main(["train", *train_args(tmp_path, overrides), "--out", str(run)]) == 0
    assert sample_cli(run, "16x48", tmp_path, capsys).shape == (2, 16, 48, 3)
    tall = nudiff.load(run, device="cpu", resolution=(48, 16))
    assert repr(tall).endswith(", 3x48x16, device=cpu)")
    assert tall.sample(2, steps=2).shape == (2, 3, 48, 16)
    same_on_the_square(run)
    capsys.readouterr()
    args = ["sample", str(run), "--resolution", "16x45", "--out", str(tmp_path / "x.png")]
    assert main(args) == 2
    need = {"unet": "model.unet.channel_mult has 2 levels", "dit": "model.dit.patch_size=4"}
    err = capsys.readouterr().err
    assert need[backbone] in err and "data.resolution and data.width divisible by" in err
    assert "got 16x45" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["process.basis={type: haar, levels: 1}"], "needs process.basis.type: identity"),
        (["process.prior={type: data}"], "needs process.prior.type: white"),
        (
            ["conditional={task: sr2, estimator: cde}"],
            "does not apply to multi-scale or conditional",
        ),
    ],
    ids=["haar", "data-prior", "conditional"],
)
def test_models_other_than_pixel_space_keep_their_one_line_error(overrides, match):
    cfg = load_config(None, [*PIXELS, TINY_UNET, *overrides])
    with pytest.raises(ConfigError, match=match):
        at_resolution(cfg, {}, (16, 48))


def test_non_square_configs_sample_but_do_not_train(tmp_path, capsys):
    """A config may say data.width (the canvas of a sampled model), but training takes square
    images, and multi-scale and conditional models refuse it."""
    cfg = load_config(None, [*PIXELS, TINY_UNET, "data.width=48"])
    assert cfg.data.image_shape == (3, 16, 48)
    wide = ["--set", "data.width=48"]
    assert (
        main(["train", *train_args(tmp_path, tiny(*PIXELS)), *wide, "--out", str(tmp_path / "w")])
        == 2
    )
    assert "training takes square images: data.width must be null" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.multiscale takes square images"):
        load_config("quickstart", ["data.width=64"])
    with pytest.raises(ConfigError, match="conditional models take square images"):
        load_config(None, [TINY_UNET, "conditional={task: sr2, estimator: cde}", "data.width=64"])


def test_the_flag_takes_n_or_hxw_where_a_command_draws_any_canvas():
    canvas, square = ImageSize(canvas=True), ImageSize()
    assert canvas("32") == square("32") == 32 and canvas("32x128") == (32, 128)
    for text in ("32x", "0x8", "8x8x8", "ax8", "-4"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a size in pixels"):
            canvas(text)
    with pytest.raises(argparse.ArgumentTypeError, match=r"N \(N x N images\)"):
        square("32x128")
    with pytest.raises(ValueError, match=r"N or \(H, W\)"):
        at_resolution(load_config(None, [*PIXELS, TINY_UNET]), {}, (16, 48, 2))


def test_the_grid_of_wide_images_is_near_square():
    assert make_grid(torch.zeros(9, 1, 4, 4), padding=0).shape == (1, 12, 12)
    assert make_grid(torch.zeros(4, 1, 4, 12), padding=0).shape == (1, 8, 24)  # 2 a row
    assert make_grid(torch.zeros(4, 1, 12, 4), padding=0).shape == (1, 12, 16)  # 4 a row
