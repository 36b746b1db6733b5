"""DiT and LEGO backbones inside nudiff: configs, the preconditioned denoiser, LEGO's joint loss,
brick skipping while sampling, sampling at another resolution, exact resume and DDP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_resume_exact, tiny, train_args, woken_model
from nudiff.build import build_denoiser, build_loss, build_process
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.losses import JointBricks
from nudiff.models.dit import DiT
from nudiff.models.lego import LEGO
from nudiff.run import load_run, sample_run
from nudiff.samplers import BrickSkip, sample

ROOT = Path(__file__).resolve().parents[1]

# a pixel-space model on 8x8 shapes: 3 tiny bricks (regions 2, 4 and the whole image)
PIXELS = [
    "data.resolution=8",
    "data.size=64",
    "process.basis.type=identity",
    "process.schedule={type: vp-cosine}",
]
TINY_LEGO = tiny(
    *PIXELS,
    "model.backbone=lego",
    "model.lego={bricks: [[2, 1, 1, 16], [4, 2, 1, 16], [0, 2, 1, 16]], heads: 2}",
    sample_steps=4,
    unet=False,
)
TINY_DIT = tiny(
    *PIXELS,
    "model.backbone=dit",
    "model.dit={patch_size: 2, width: 16, depth: 1, heads: 2}",
    sample_steps=4,
    unet=False,
)


def test_stacked_bricks_keep_their_trained_regions_on_a_larger_canvas(tmp_path):
    cfg = load_config(ROOT / "configs" / "mnist32_lego.yaml", ["model.sigma_data=0.5"])
    state = build_denoiser(cfg, build_process(cfg)).state_dict()
    from nudiff.run import at_resolution

    big, moved = at_resolution(cfg, state, 64)
    model = build_denoiser(big, build_process(big))
    model.load_state_dict(moved)
    assert [b.region for b in model.backbone.bricks] == [4, 16, 32]
    # regions fixed in pixels: 4x the regions, 4x the work but the per-image noise embedding
    m32, m64 = model.backbone.count_macs(32, 32), model.backbone.count_macs(64, 64)
    assert m64 < 4 * m32 and m64 == pytest.approx(4 * m32, rel=1e-2)


def test_configs_build_the_chosen_backbone():
    assert isinstance(woken_model(TINY_LEGO)[1].backbone, LEGO)
    assert isinstance(woken_model(TINY_DIT)[1].backbone, DiT)
    cfg = load_config(ROOT / "configs" / "mnist32_lego.yaml")
    assert cfg.model.backbone == "lego" and cfg.model.lego.joint_loss
    for name in ("mnist32_dit", "mnist32_lego", "cifar10_lego"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        model = build_denoiser(cfg, build_process(cfg))  # placeholders for the data moments
        assert model.backbone.count_macs(cfg.data.resolution, cfg.data.resolution) > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.backbone=dit", "model.dit.patch_size=3"], "patch_size=3 needs data.resolution"),
        (["model.backbone=lego", "model.lego.bricks=[[3, 1, 1, 16]]"], "region"),
        (["model.backbone=lego", "model.lego.bricks=[[4, 3, 1, 16]]"], "patch"),
        (["model.backbone=lego", "model.lego.bricks=[[4, 2, 1, 15]]"], "divisible by"),
        (["sample.skip={bricks: last, from: 0.5}"], "sample.skip needs model.backbone: lego"),
        (["model.backbone=lego", "sample.skip={bricks: 1, from: 2}"], "sample.skip.from"),
        (["model.lego.stacking=zz"], "model.lego.stacking"),
    ],
)
def test_bad_backbone_configs_are_one_line_errors(overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message) as err:
        load_config(None, ["data.resolution=16", *overrides])
    assert "\n" not in str(err.value)


def test_every_brick_is_a_denoiser_and_the_last_active_one_is_the_output():
    """``per_brick`` gives brick k's own preconditioned estimate; a model cut after brick k
    (``active_bricks = k``) is exactly that denoiser."""
    cfg, model = woken_model(TINY_LEGO)
    u, t = torch.randn(3, 3, 8, 8), torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        every = model.per_brick(u, t)
        assert every.shape == (3, *u.shape)
        torch.testing.assert_close(every[-1], model(u, t), rtol=0, atol=0)
        for k in (1, 2):
            model.backbone.active_bricks = k
            torch.testing.assert_close(every[k - 1], model(u, t), rtol=0, atol=0)
        model.backbone.active_bricks = None
    assert not torch.allclose(every[0], every[-1])


def test_joint_loss_is_the_mean_of_the_bricks_losses():
    cfg, model = woken_model(TINY_LEGO)
    loss = build_loss(cfg, model.process, model)
    assert loss.piece(JointBricks) is not None
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = loss.draw(4, torch.Generator().manual_seed(1))
    got = loss(model, x0, noise)
    u0 = model.process.encode(x0)
    ut = model.process.marginal(u0, noise["t"], noise["eps"])
    w = loss.weight(noise["t"], u0)
    per_brick = []
    for k in (1, 2, 3):
        model.backbone.active_bricks = k
        per_brick.append((w * (model(ut, noise["t"]) - u0) ** 2).flatten(1).mean(1))
    model.backbone.active_bricks = None
    torch.testing.assert_close(got, torch.stack(per_brick).mean(0))


@pytest.mark.parametrize(
    "basis", ["{type: identity}", "{type: haar, levels: 2}", "{type: dct}", "{type: pca}"]
)
def test_dit_trains_and_samples_in_every_basis(basis):
    overrides = [*TINY_DIT, f"process.basis={basis}", "process.schedule={type: multispeed}"]
    if "identity" in basis:
        overrides[-1] = "process.schedule={type: vp-cosine}"
    if "pca" in basis:  # a full-rank covariance of 192 components
        overrides.append("data.size=256")
    cfg = load_config(None, overrides)
    from nudiff.build import build_data

    data = build_data(cfg)
    process = build_process(cfg, data)
    model = build_denoiser(cfg, process, data)
    loss = build_loss(cfg, process, model)
    x0 = torch.stack([data[i] for i in range(4)])
    value = loss(model, x0, loss.draw(4, torch.Generator().manual_seed(0))).mean()
    value.backward()
    assert torch.isfinite(value) and model.backbone.linear_out.weight.grad.abs().sum() > 0
    out = sample(model, process, 2, sampler="dpmpp-2m", steps=3)
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all()


@pytest.mark.parametrize("backbone", ["dit", "lego"])
def test_multiscale_model_with_transformer_backbones(backbone):
    """One DiT / LEGO stack per scale, each at its scale's size; trained one scale per step,
    sampled coarse to fine."""
    stack = {
        "dit": "model.dit={patch_size: 2, width: 16, depth: 1, heads: 2}",
        "lego": "model.lego={stacking: pg, width: 16, depth: 1, patch: 2, heads: 2}",
    }
    cfg = load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            "data.size=16",
            "process.basis.levels=1",
            # the quick start draws its 3 scales with weights; this model has 2, in turn
            "model.multiscale.scale_sampling=round-robin",
            "model.multiscale.scale_weights=null",
            f"model.backbone={backbone}",
            stack[backbone],
            "model.sigma_data=0.5",
        ],
    )
    process = build_process(cfg)
    model = build_denoiser(cfg, process)
    sizes = [s.process.shape[-1] for s in model.scales]
    kind = {"dit": DiT, "lego": LEGO}[backbone]
    assert sizes == [16, 8] and all(isinstance(s.backbone, kind) for s in model.scales)
    if backbone == "lego":
        assert [b.region for b in model.scales[1].backbone.bricks] == [4, 4, 8]
    loss = build_loss(cfg, process, model)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    for step in range(2):  # one step per scale
        noise = loss.draw(4, torch.Generator().manual_seed(step), step)
        assert noise["scale"] == step
        assert torch.isfinite(loss(model, x0, noise)).all()
    out = sample(model, process, 2, sampler="dpmpp-2m", steps=4)
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()


def test_lego_that_does_not_fit_a_scale_is_a_clear_error():
    with pytest.raises(ConfigError, match="model.lego does not fit the 4x4 scale"):
        load_config(ROOT / "configs" / "quickstart.yaml", ["model.backbone=lego"])


def test_skip_rule_parsing_and_start_time():
    assert BrickSkip.parse("bricks=last,from=0.5") == BrickSkip("last", 0.5)
    assert BrickSkip.parse("bricks=2") == BrickSkip(2, 0.5)
    assert BrickSkip("last").keep(3) == 2 and BrickSkip(1).keep(3) == 1
    ts = torch.linspace(1, 0, 5)  # 4 steps
    assert BrickSkip(start=0.5).start_time(ts) == pytest.approx(0.5)  # steps 2 and 3 skip
    assert BrickSkip(start=0.6).start_time(ts) == pytest.approx(0.25)  # ceil(2.4) = 3
    assert BrickSkip(start=1.0).start_time(ts) == float("-inf")
    for bad in ("bricks=0", "bricks=x", "from=1.5", "when=1", "bricks"):
        with pytest.raises(ValueError):
            BrickSkip.parse(bad)
    with pytest.raises(ValueError, match="keep between 1 and 3"):
        BrickSkip(4).keep(3)


def _brick_counter(model):
    calls = [0] * model.backbone.num_bricks
    for i, brick in enumerate(model.backbone.bricks):
        brick.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "heun"])
def test_skipped_bricks_are_never_called_late_in_sampling(sampler):
    cfg, model = woken_model(TINY_LEGO)
    calls = _brick_counter(model)
    kw = dict(sampler=sampler, steps=4, seed=3)
    full = sample(model, model.process, 5, **kw)
    assert calls == [full.nfe] * 3 and full.skipped == 0
    calls[:] = [0, 0, 0]
    skipped = sample(model, model.process, 5, skip=BrickSkip("last", 0.5), **kw)
    assert skipped.nfe == full.nfe and skipped.skipped > 0
    assert calls == [full.nfe, full.nfe, full.nfe - skipped.skipped]
    assert not torch.allclose(skipped.images, full.images)
    never = sample(model, model.process, 5, skip=BrickSkip("last", 1.0), **kw)
    assert never.skipped == 0 and torch.equal(never.images, full.images)


def test_skipping_needs_a_lego_model():
    cfg, model = woken_model(TINY_DIT)
    with pytest.raises(ValueError, match="LEGO backbone"):
        sample(model, model.process, 2, steps=2, skip=BrickSkip())


@pytest.mark.parametrize("overrides", [TINY_LEGO, TINY_DIT], ids=["lego", "dit"])
def test_training_resumes_bit_identically_and_samples_larger_than_trained(tmp_path, overrides):
    """4 steps == 2 steps + resume to 4; then the run samples 16x16 images from 8x8 training,
    with the skip rule from the CLI for LEGO."""
    _, b = assert_resume_exact(tmp_path, None, overrides)
    out = sample_run(b, n=3, resolution=16)
    assert out.images.shape == (3, 3, 16, 16) and torch.isfinite(out.images).all()
    cfg, model = load_run(b, resolution=16)
    assert cfg.data.resolution == 16 and model.data_mean.shape == (3, 16, 16)
    if isinstance(model.backbone, LEGO):  # the trained regions tile the larger canvas
        assert [brick.region for brick in model.backbone.bricks] == [2, 4, 0]
    skip = ["--skip", "bricks=last,from=0.5"] if "model.backbone=lego" in overrides else []
    png = tmp_path / "big.png"
    args = ["sample", str(b), "--n-samples", "2", "--resolution", "16", "--out", str(png), *skip]
    assert main(args) == 0 and png.is_file()


def test_other_resolutions_need_a_pixel_basis_and_a_size_the_bricks_tile(tmp_path):
    args = train_args(tmp_path, TINY_LEGO)
    one = ["--set", "train.steps=1", "--set", "train.checkpoint_every=1"]
    haar = ["--set", "process.basis={type: haar, levels: 1}"]
    assert main(["train", *args, *one, "--out", str(tmp_path / "pixels")]) == 0
    assert main(["train", *args, *one, *haar, "--out", str(tmp_path / "haar")]) == 0
    with pytest.raises(ConfigError, match="needs process.basis.type: identity"):
        load_run(tmp_path / "haar", resolution=16)
    with pytest.raises(ConfigError, match="region 4 must divide the image size 6"):
        load_run(tmp_path / "pixels", resolution=6)
