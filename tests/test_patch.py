"""Patch Diffusion training: crop coordinates, crops of components and processes, per-step
patch sizes, the denoiser and loss on crops, config errors, exact resume, full-canvas
sampling with every sampler."""

import pytest
import torch
import yaml
from torch import nn

from conftest import assert_resume_exact, data_only_config, tiny
from nudiff.bases import Haar, Identity
from nudiff.config import ConfigError, load_config
from nudiff.losses import DenoisingLoss, PatchCrops
from nudiff.models import UNet
from nudiff.models.denoiser import Denoiser
from nudiff.models.dit import DiT, coordinate_channels
from nudiff.models.lego import LEGO
from nudiff.patch import Crop, PatchSizes, crop_coordinates
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.schedules import Sequential, VPCosine

TINY = tiny(
    "data={name: shapes, resolution: 16, channels: 1, size: 64, max_shapes: 1}",
    "process={basis: {type: identity}, schedule: {type: vp-cosine}}",
    "model.sigma_data=data",
    "model.stats_samples=16",
    "model.unet.coord_channels=2",
    "train.patch={sizes: [4, 8, 16], probs: [0.2, 0.3, 0.5]}",
    batch_size=4,
)


class Recorder(nn.Module):
    """A zero backbone that records its keywords (coordinates)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, c_noise, coords=None):
        self.seen.append((x, c_noise, coords))
        return torch.zeros_like(x)


def test_crop_coordinates_are_the_slice_of_the_full_grid():
    g = torch.Generator().manual_seed(0)
    for canvas, size in [((16, 16), 4), ((16, 16), 16), ((32, 32), 8), ((12, 12), 5)]:
        full = coordinate_channels(1, *canvas, dtype=torch.float64)[0]
        top = torch.randint(canvas[0] - size + 1, (6,), generator=g)
        left = torch.randint(canvas[1] - size + 1, (6,), generator=g)
        got = crop_coordinates(top, left, size, canvas, dtype=torch.float64)
        assert got.shape == (6, 2, size, size)
        for b in range(6):
            i, j = int(top[b]), int(left[b])
            assert torch.equal(got[b], full[:, i : i + size, j : j + size])
    # pixel centres, row then column, inside (-1, 1)
    c = crop_coordinates(0, 0, 4, (4, 4), dtype=torch.float64)[0]
    assert c[0, :, 0].tolist() == [-0.75, -0.25, 0.25, 0.75] and (c[0, 0] == -0.75).all()
    with pytest.raises(ValueError, match="must fit"):
        crop_coordinates(torch.tensor([13]), torch.tensor([0]), 4, (16, 16))


@pytest.mark.parametrize(
    "basis", [Identity((2, 16, 16)), Haar((2, 16, 16), 1), Haar((2, 16, 16), 2)]
)
def test_a_crop_of_the_components_is_the_components_of_the_crop(basis):
    align = 1 if isinstance(basis, Identity) else 2**basis.levels
    x = torch.randn(5, 2, 16, 16, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    for size in (4, 8, 16):
        top = torch.randint((16 - size) // align + 1, (5,), generator=g) * align
        left = torch.randint((16 - size) // align + 1, (5,), generator=g) * align
        crop = Crop(basis, top, left, size)
        got = crop.components(basis(x))
        for b in range(5):
            i, j = int(top[b]), int(left[b])
            want = crop.basis(x[b : b + 1, :, i : i + size, j : j + size])[0]
            torch.testing.assert_close(got[b], want, rtol=0, atol=1e-12)
    if align > 1:
        with pytest.raises(ValueError, match="multiples of"):
            Crop(basis, torch.tensor([1]), torch.tensor([0]), 8)


def test_the_process_of_a_crop_is_the_crop_of_the_process():
    basis = Identity((1, 8, 8))
    prior = Prior((1, 8, 8), torch.randn(1, 8, 8), torch.rand(1, 8, 8) + 0.5)
    process = Process(basis, Sequential(basis.label("col"), overlap=0.5), prior).double()
    crop = Crop(basis, torch.tensor([0, 2, 4]), torch.tensor([4, 1, 0]), 4)
    sub = crop.process(process)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    for full, part in zip(process.coefficients(t), sub.coefficients(t), strict=True):
        torch.testing.assert_close(part, crop.components(full))
    torch.testing.assert_close(sub.log_snr(t), crop.components(process.log_snr(t)))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(
        sub.prior.whiten(crop.components(basis(x))), crop.components(process.encode(x))
    )
    assert sub.inactive(t).shape == (3, 1, 4, 4)


def test_denoiser_on_crops_is_the_crop_of_the_denoiser_on_the_canvas():
    """With a zero network the EDM denoiser is per component: its answer on crops (cropped
    coefficients, moments, prior) is the crop of its answer on the full image; the backbone
    sees the crops' coordinates and the full process's conditioning."""
    basis = Haar((1, 8, 8), 1)
    process = Process(basis, Sequential(basis.label("frequency"), overlap=0.5)).double()
    mean, std = torch.randn(1, 8, 8) * 0.1, torch.rand(1, 8, 8) + 0.3
    backbone = Recorder()
    model = Denoiser(process, backbone, data_mean=mean, data_std=std).double()
    u = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64)
    crop = Crop(basis, torch.tensor([0, 2, 6]), torch.tensor([4, 0, 2]), 2)
    full = model(u, t)
    assert backbone.seen[-1][2] is None  # sampling: the backbone's own full grid
    got = model(crop.components(u), t, crop=crop)
    torch.testing.assert_close(got, crop.components(full))
    x, c_noise, coords = backbone.seen[-1]
    assert x.shape == (3, 1, 2, 2)
    torch.testing.assert_close(coords, crop.coords(torch.float64))
    torch.testing.assert_close(c_noise, backbone.seen[0][1])  # the full process's state


@pytest.mark.parametrize(
    "backbone",
    [
        UNet(
            1, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), coord_channels=2
        ),
        DiT(1, patch_size=2, width=16, depth=1, heads=2, coord_channels=2),
        LEGO(1, bricks=[(4, 2, 1, 16), (0, 2, 1, 16)], heads=2),
    ],
)
def test_backbones_take_explicit_coordinates_defaulting_to_the_full_grid(backbone):
    torch.manual_seed(0)
    for p in backbone.parameters():  # leave the zero-initialised outputs: make them matter
        nn.init.normal_(p, std=0.1)
    x, c = torch.randn(2, 1, 8, 8), torch.rand(2)
    default = backbone(x, c)
    torch.testing.assert_close(backbone(x, c, coords=coordinate_channels(2, 8, 8)), default)
    shifted = crop_coordinates(torch.tensor([0, 8]), torch.tensor([8, 0]), 8, (16, 16))
    assert not torch.allclose(backbone(x, c, coords=shifted), default)


def test_patch_sizes_follow_the_configured_frequencies_and_multipliers():
    sizes = PatchSizes([8, 16, 32], 32, [0.2, 0.3, 0.5], seed=5, align=4)
    draws = [sizes.size_for_step(k) for k in range(4000)]
    assert draws == [sizes.size_for_step(k) for k in range(4000)]  # a function of the step
    freq = torch.tensor([draws.count(p) / 4000 for p in (8, 16, 32)])
    assert (freq - torch.tensor([0.2, 0.3, 0.5])).abs().max() < 0.03
    assert [sizes.multiplier(p) for p in (8, 16, 32)] == [16, 4, 1]
    assert PatchSizes([8], 32, batch_multiplier=False).multiplier(8) == 1
    assert PatchSizes([12], 32).multiplier(12) == 7  # (32 / 12)^2 = 7.1: any size works
    top, left = sizes.offsets(5000, 8, torch.Generator().manual_seed(0))
    assert (top % 4 == 0).all() and (left % 4 == 0).all()
    assert set(top.tolist()) == set(range(0, 25, 4)) and left.max() == 24
    with pytest.raises(ValueError, match="multiple of 4"):
        PatchSizes([6], 32, align=4)


def test_progressive_patch_schedule_moves_from_small_to_full_patches():
    """Progressive: the first size only at step 0, two neighbouring sizes sharing the draws on
    the ramp (half and half at its quarter points), the last size only from the ramp's end; the
    side multiplier is R / p."""
    sizes = PatchSizes([8, 16, 32], 32, schedule="progressive", ramp_steps=1000, seed=3)
    assert sizes.probs_at(0) == [1.0, 0.0, 0.0]
    assert sizes.probs_at(250) == pytest.approx([0.5, 0.5, 0.0])
    assert sizes.probs_at(500) == pytest.approx([0.0, 1.0, 0.0])
    assert sizes.probs_at(1000) == sizes.probs_at(50_000) == [0.0, 0.0, 1.0]
    early = [sizes.size_for_step(k) for k in range(0, 100)]
    late = [sizes.size_for_step(k) for k in range(1000, 1100)]
    assert set(early) <= {8, 16} and early.count(8) > 80 and set(late) == {32}
    middle = [sizes.size_for_step(k) for k in range(700, 800)]
    assert set(middle) == {16, 32}
    side = PatchSizes([8, 16, 32], 32, batch_multiplier="side")
    assert [side.multiplier(p) for p in (8, 16, 32)] == [4, 2, 1]
    with pytest.raises(ValueError, match="ramp_steps"):
        PatchSizes([8, 32], 32, schedule="progressive")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("{sizes: [8, 32], schedule: progressive}", "needs train.patch.ramp_steps"),
        ("{sizes: [32, 8], schedule: progressive, ramp_steps: 10}", "increasing sizes"),
        ("{sizes: [8, 32], probs: [1, 1], schedule: progressive, ramp_steps: 9}", "fixed only"),
        ("{sizes: [8, 32], ramp_steps: 10}", "progressive only"),
        ("{sizes: [8, 32], batch_multiplier: double}", "batch_multiplier"),
    ],
)
def test_patch_schedule_config_errors(patch, message):
    from nudiff.training.config import PatchConfig

    with pytest.raises(ValueError, match=message):
        PatchConfig.model_validate(yaml.safe_load(patch))
    assert (
        PatchConfig.model_validate({"sizes": [8], "batch_multiplier": True}).batch_multiplier
        == "area"
    )
    assert (
        PatchConfig.model_validate({"sizes": [8], "batch_multiplier": False}).batch_multiplier
        == "none"
    )


def test_patch_loss_draws_crops_and_equals_the_full_loss_on_full_crops():
    basis = Identity((1, 8, 8))
    process = Process(basis, VPCosine()).double()
    model = Denoiser(process, Recorder()).double()
    patch = PatchSizes([4, 8], 8, seed=2)
    loss = DenoisingLoss(process, pieces=[PatchCrops(process, patch)])
    g = torch.Generator().manual_seed(0)
    step = next(k for k in range(100) if patch.size_for_step(k) == 4)
    noise = loss.draw(6, g, step=step)
    assert noise["eps"].shape == (6, 1, 4, 4) and noise["patch"] == 4
    assert loss.batch_multiplier(step) == 4
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    noise = {k: v.double() if k in ("t", "eps") else v for k, v in noise.items()}
    assert loss(model, x, noise).shape == (6,)
    # a crop the size of the image at (0, 0) is the image: the same loss as without patches
    full = loss.draw(6, g, step=next(k for k in range(100) if patch.size_for_step(k) == 8))
    full = {k: v.double() if k in ("t", "eps") else v for k, v in full.items()}
    full["top"], full["left"] = torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)
    plain = DenoisingLoss(process)
    want = plain(model, x, {"t": full["t"], "eps": full["eps"]})
    torch.testing.assert_close(loss(model, x, full), want)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["process.basis={type: dct}"], "components are local: identity or haar; dct"),
        (["process.basis={type: pca}"], "components are local"),
        (["model.unet.coord_channels=0"], "model.unet.coord_channels: 2"),
        (
            ["model.backbone=dit", "model.dit={patch_size: 2, width: 16, depth: 1, heads: 2}"],
            "model.dit.coord_channels: 2",
        ),
        (
            ["process={basis: {type: haar, levels: 3}, schedule: {type: vp-cosine}}"],
            "multiple of 2\\^levels = 8",
        ),
        (["train.patch={sizes: [4, 32]}"], "exceeds data.resolution"),
        (["train.patch={sizes: [4, 8], probs: [1.0]}"], "one probability per size"),
        (["train.patch={sizes: [5, 16]}"], "patch size 5"),  # the UNet halves once: needs even
        (
            [
                "process={basis: {type: haar, levels: 2}, schedule: {type: multispeed}}",
                "model.multiscale={}",
            ],
            "does not support model.multiscale",
        ),
    ],
)
def test_bad_patch_configs_are_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data_only_config(tmp_path), [*TINY, *overrides])


def test_haar_and_32x32_patch_configs_are_valid(tmp_path):
    sets = [
        "data.resolution=32",
        "process={basis: {type: haar, levels: 2}, schedule: {type: multispeed}}",
        "train.patch={sizes: [8, 16, 32], probs: [0.2, 0.3, 0.5]}",
    ]
    cfg = load_config(data_only_config(tmp_path), [*TINY, *sets])
    assert cfg.train.patch.sizes == [8, 16, 32]


def test_patch_training_resumes_exactly_counts_images_and_samples_the_full_canvas(tmp_path):
    from nudiff.patch import PatchSizes as Sizes
    from nudiff.run import load_run, sample_model
    from nudiff.samplers import SAMPLERS
    from nudiff.training.checkpoint import load_checkpoint

    _, b = assert_resume_exact(tmp_path, None, TINY)
    state = load_checkpoint(b / "checkpoints" / "step_000004").state
    sizes = Sizes([4, 8, 16], 16, [0.2, 0.3, 0.5], seed=0)
    assert state["images_seen"] == sum(4 * sizes.multiplier_for_step(k) for k in range(4))
    cfg, model = load_run(b)
    for sampler in SAMPLERS:
        x = sample_model(cfg, model, 2, sampler=sampler, steps=2).images
        assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all(), sampler


@pytest.mark.parametrize("name", ["cifar10_patch", "mnist32_patch"])
def test_shipped_patch_configs_validate(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.train.patch.sizes == [8, 16, 32] and cfg.model.unet.coord_channels == 2


def test_stream_sampler_splits_each_multiplied_global_batch_over_ranks():
    from itertools import islice

    from nudiff.training.trainer import StreamBatchSampler

    def sizes(step):
        return 4 * (1, 16, 4)[step % 3]

    one = list(islice(iter(StreamBatchSampler(50, sizes, seed=3)), 7))
    ranks = [list(islice(iter(StreamBatchSampler(50, sizes, 3, r, 2)), 7)) for r in (0, 1)]
    assert [len(b) for b in one] == [sizes(k) for k in range(7)]
    assert all(a + b == c for a, b, c in zip(*ranks, one, strict=True))
    flat = sum(one, [])  # epochs of the permutation, read as one stream
    assert sorted(flat[:50]) == list(range(50)) and sorted(flat[50:100]) == list(range(50))
    # resuming at step 3 from (epoch, position) continues the same stream
    seen = sum(sizes(k) for k in range(3))
    later = list(
        islice(
            iter(StreamBatchSampler(50, sizes, 3, epoch=seen // 50, position=seen % 50, step=3)), 4
        )
    )
    assert later == one[3:]
