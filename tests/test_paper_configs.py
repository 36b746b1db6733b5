"""The paper-scale configs (``configs/paper/*.yaml``, documented in ``docs/paper.md``): each
loads and validates; its full-size model builds on the meta device with the parameter count
that ``docs/paper.md`` states (within 1%); and each trains 2 steps and samples 2 steps through
the command line, with only what a CPU test must change overridden: the data (built-in shapes
at 16x16, 8x8 for PCA), the network's width, the batch, and what follows from them (the PCA
and prior fit sizes, the patch sizes, the sampler budget). SiD distils a tiny teacher trained
from ``edm_cifar10.yaml`` first."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from conftest import ROOT, sets, tiny
from nudiff.cli import main
from nudiff.config import load_config

PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
NAMES = [p.stem for p in PAPER]
DOC = ROOT / "docs" / "paper.md"

_spec = importlib.util.spec_from_file_location(
    "paper_estimates", ROOT / "scripts" / "paper_estimates.py"
)
estimates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(estimates)

DATA = "data={name: shapes, resolution: 16, channels: 3, size: 16, min_shapes: 1, max_shapes: 1}"
COMMON = [DATA, "model.stats_samples=8"]  # bf16 applies on CUDA only
TINY_DIT = "model.dit={patch_size: 2, width: 16, depth: 1, heads: 2}"
TINY_LEGO = "model.lego={bricks: [[4, 2, 1, 16], [16, 8, 1, 16], [0, 2, 1, 16]], heads: 2}"
#: per config: (its own CPU overrides, a UNet backbone, sampler steps)
SMOKE = {
    "beta_cifar10": ([], True, 2),
    "cmde_celebahq128_inpaint": ([], True, 2),
    "cmde_celebahq160_sr": ([], True, 2),
    "edm_cifar10": ([], True, 2),
    "gud_cifar10": (  # PCA needs more images than dimensions: 8x8 RGB, 256 images
        [
            "data={name: shapes, resolution: 8, channels: 3, size: 256, max_shapes: 1}",
            "process.basis.pca_samples=256",
            "process.prior.fit_samples=256",
        ],
        True,
        2,
    ),
    "guidance_imagenet128": ([], True, 2),
    "lego_imagenet64": ([TINY_LEGO], False, 2),
    "msdiff_celebahq128": (["model.multiscale.stages=null"], True, 4),  # 1 step per scale
    "msf_imagenet256": (
        [TINY_DIT, "model.multiscale.stages=null", "sample.budgets=[1, 1]"],
        False,
        2,
    ),
    "ndm_cifar10": (["process.transform.width=8"], True, 2),
    "patch_celeba64": (
        ["model.unet.coord_channels=2", "train.patch={sizes: [4, 8, 16], probs: [0.2, 0.3, 0.5]}"],
        True,
        2,
    ),
    "sid_cifar10": ([], True, 1),
    "uniform_celebahq128": ([], True, 2),
}


def smoke_overrides(name: str) -> list[str]:
    own, unet, steps = SMOKE[name]
    return tiny(
        *COMMON, *own, steps=2, checkpoint_every=2, batch_size=4, sample_steps=steps, unet=unet
    )


def doc_parameters() -> dict[str, float]:
    """``config -> parameters`` from the estimate table of docs/paper.md, whose rows read
    ``| `name` | 57.5M | ...``."""
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9.]+)M \|", DOC.read_text(), flags=re.M)
    return {name: float(n) * 1e6 for name, n in rows}


def test_every_paper_config_is_documented_and_smoke_tested():
    assert len(PAPER) >= 11
    assert set(NAMES) == set(SMOKE)
    text = DOC.read_text()
    assert set(doc_parameters()) == set(NAMES)
    for name in NAMES:
        assert f"configs/paper/{name}.yaml" in text, name


@pytest.mark.parametrize("path", PAPER, ids=NAMES)
def test_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.train.steps > 1000 and cfg.train.batch_size >= 16  # paper scale, not a toy


@pytest.mark.parametrize("path", PAPER, ids=NAMES)
def test_full_size_model_has_the_documented_parameter_count(path):
    n = estimates.parameters(load_config(path))
    documented = doc_parameters()[path.stem]
    assert abs(n - documented) <= 0.01 * documented, (path.stem, n, documented)


def test_the_estimates_count_the_work_of_each_family():
    """Multi-scale training costs less per image than its full-resolution network alone; SiD
    runs its teacher-sized network 11 times per image."""
    ms = load_config(ROOT / "configs" / "paper" / "msdiff_celebahq128.yaml")
    model = estimates.meta_model(ms)
    finest = model.scales[0].backbone
    full = estimates.TRAIN_PASSES * estimates._macs(finest, 128)
    assert estimates.training_macs(ms, model) < 0.5 * full
    sid = load_config(ROOT / "configs" / "paper" / "sid_cifar10.yaml")
    teacher = estimates.meta_model(sid)
    assert estimates.training_macs(sid, teacher) == 11 * estimates._macs(teacher.backbone, 32)
    assert estimates.parameters(sid, teacher) == 2 * sum(p.numel() for p in teacher.parameters())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("paper")}


def _train(runs, name: str, extra=()):
    if name not in runs:
        run = runs["root"] / name
        path = ROOT / "configs" / "paper" / f"{name}.yaml"
        args = ["train", str(path), "--out", str(run), *sets([*smoke_overrides(name), *extra])]
        assert main(args) == 0
        assert (run / "checkpoints" / "step_000002").is_dir()
        runs[name] = run
    return runs[name]


@pytest.mark.parametrize("name", NAMES)
def test_smoke_trains_two_steps_and_samples(name, runs):
    extra = []
    if name == "sid_cifar10":  # distils a tiny teacher of its own architecture
        extra = [f"distill.teacher={_train(runs, 'edm_cifar10')}"]
    run = _train(runs, name, extra)
    args = ["sample", str(run), "--out", str(run / "s.png"), "--n-samples", "2"]
    if name.startswith("cmde_"):  # full-size inputs: degraded by the task
        np.savez(run / "cond.npz", x_train=np.zeros((1, 16, 16, 3), np.uint8))
        args[-2:] = ["--condition", str(run / "cond.npz"), "--per-input", "2"]
    assert main(args) == 0
    assert (run / "s.png").is_file()
