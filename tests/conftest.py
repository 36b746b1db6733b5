import csv
import os
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch

from nudiff.bases import DCT, Haar, Identity
from nudiff.schedules import (
    EDM,
    VE,
    BlurringDiffusion,
    MultiSpeed,
    RectifiedFlow,
    Sequential,
    SoftConditioning,
    VPCosine,
    VPLinear,
    resolution_shift,
)

torch.set_num_threads(2)

SHAPE = (1, 8, 8)
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
TINY_UNET = "model.unet={channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: []}"
#: the MNIST and CIFAR-10 files of the slow tests, where the workplace keeps them: the packaged
#: configs' data.path (mnist.npz, cifar10.npz) is also looked for under $NUDIFF_DATA
DATA_DIR = ROOT.parent / "shared" / "data"
if DATA_DIR.is_dir():
    os.environ.setdefault("NUDIFF_DATA", str(DATA_DIR))


def schedule_cases(shape=SHAPE):
    """(name, basis, schedule) covering every schedule family."""
    haar = Haar(shape, 2 if shape[1] < 8 else 3)
    dct = DCT(shape)
    ident = Identity(shape)
    return [
        ("vp-cosine", dct, VPCosine()),
        ("vp-linear", dct, VPLinear()),
        ("ve", dct, VE(sigma_min=0.01, sigma_max=20.0)),
        ("edm", dct, EDM(sigma_min=0.01, sigma_max=20.0)),
        ("rectified-flow", dct, RectifiedFlow()),
        ("multispeed", haar, MultiSpeed(haar.level_map() - 1)),
        ("soft", dct, SoftConditioning(dct.label(), softness=0.5)),
        ("soft-clipped", dct, SoftConditioning(dct.label(), softness=0.5, clip=True)),
        ("sequential", ident, Sequential(ident.label("col"), overlap=0.25)),
        ("blurring", dct, BlurringDiffusion(shape, blur_sigma_max=5.0)),
        ("shifted-cosine", dct, VPCosine(shift=resolution_shift(32, 64))),
    ]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------ tiny training runs
def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def merge(overrides) -> list[str]:
    """``--set`` overrides with the ones a later override replaces left out: ``a.b=...`` replaces
    an earlier ``a.b=...`` and ``a.b.c=...`` (as ``--set`` does), so the result builds the same
    config as ``overrides`` in order, each key said once, at the place of its last setting."""
    out: list[str] = []
    for item in overrides:
        key = _key(item)
        out = [s for s in out if _key(s) != key and not _key(s).startswith(key + ".")]
        out.append(item)
    return out


def tiny(
    *extra: str,
    steps: int = 4,
    checkpoint_every: int = 2,
    batch_size: int = 8,
    sample_steps: int = 3,
    unet: bool = True,
) -> list[str]:
    """``--set`` overrides of a tiny training run: an 8-channel two-level UNet without attention
    (``unet`` False: none, for another backbone), ``batch_size`` images a step, ``steps``
    steps with a checkpoint every ``checkpoint_every``, the loss logged every step, no sample
    grids, TensorBoard, loader workers or time guard, and ``sample_steps`` sampler steps; then
    ``extra``, a family's own keys, which replace these (:func:`merge`)."""
    return merge(
        [
            *([TINY_UNET] if unet else []),
            f"train.batch_size={batch_size}",
            f"train.steps={steps}",
            f"train.checkpoint_every={checkpoint_every}",
            "train.log_every=1",
            "train.sample_every=0",
            "train.num_workers=0",
            "train.tensorboard=false",
            "train.max_minutes=null",
            f"sample.steps={sample_steps}",
            *extra,
        ]
    )


def tiny_quickstart(*extra: str, **kw) -> list[str]:
    """:func:`tiny` for the quick start's config (:data:`QUICKSTART`): its three-scale model,
    with attention at 8x8, on 64 16x16 shapes."""
    return tiny(
        "data.resolution=16",
        "data.size=64",
        "model.unet={channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: [1]}",
        "process.basis={type: haar, levels: 2}",
        "process.schedule={type: multispeed}",
        *extra,
        **kw,
    )


def tiny_distill(*extra: str, steps: int = 4, batch_size: int = 4) -> list[str]:
    """``--set`` overrides of a tiny SiD distillation of a trained run (data-free; the model is
    the teacher's): ``batch_size`` noise draws a step, ``steps`` steps with a checkpoint every
    2, the losses logged every step, no sample grids, TensorBoard or time guard; then
    ``extra``."""
    return merge(
        [
            f"train.batch_size={batch_size}",
            f"train.steps={steps}",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "train.sample_every=0",
            "train.tensorboard=false",
            "train.max_minutes=null",
            *extra,
        ]
    )


def sets(overrides) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for s in overrides for arg in ("--set", s)]


def data_only_config(tmp_path) -> Path:
    """A config file holding just the data source (``nudiff train`` wants a config file)."""
    path = tmp_path / "tiny.yaml"
    path.write_text("data: {name: shapes}\n")
    return path


def train_args(tmp_path, overrides) -> list[str]:
    """``nudiff train`` arguments for a config made only of ``--set`` overrides (a file holding
    just the data source, as ``nudiff train`` wants a config file)."""
    return [str(data_only_config(tmp_path)), *sets(overrides)]


def woken_model(overrides, seed: int = 0):
    """``(config, denoiser)`` of ``--set`` overrides alone (no config file), its weights drawn
    with seed ``seed`` and then nudged by 0.05 N(0, 1) each, so that the zero-initialised
    output layers answer with more than zero."""
    from nudiff.build import build_denoiser, build_process
    from nudiff.config import load_config

    cfg = load_config(None, overrides)
    process = build_process(cfg)
    torch.manual_seed(seed)
    model = build_denoiser(cfg, process)
    for p in model.parameters():  # wake the zero-initialised output layers
        p.data.add_(0.05 * torch.randn_like(p))
    return cfg, model


# -------------------------------------------------------------------------- exact resume
def _same(a, b, where: str) -> None:
    """``a`` and ``b`` (nested dicts, lists, tensors, numbers) equal to the bit."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# log.csv's columns that do not depend on the clock
_LOGGED = ("step", "images_seen", "lr")


def _log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {k: v for k, v in r.items() if k in _LOGGED or k.startswith(("loss", "grad_norm"))}
        for r in rows
    ]


def assert_same_checkpoint(a: Path, b: Path, step: int, keys=()) -> None:
    """Runs ``a`` and ``b`` agree to the bit at checkpoint ``step``: model and EMA weights (the
    same keys, every fnmatch pattern of ``keys`` matching one of them), the optimiser, LR
    schedule, EMA counts, data stream and random states (all of ``state.pt`` but the
    wall-clock seconds), and log.csv's steps, losses, learning rates, gradient norms and
    images seen."""
    from safetensors.torch import load_file

    ck_a, ck_b = (run / "checkpoints" / f"step_{step:06d}" for run in (a, b))
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(ck_a / name), load_file(ck_b / name)
        assert wa.keys() == wb.keys(), name
        for pattern in keys:
            assert any(fnmatchcase(k, pattern) for k in wa), (name, pattern)
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (name, k)
    sa, sb = (torch.load(ck / "state.pt", weights_only=True) for ck in (ck_a, ck_b))
    assert sa["step"] == sb["step"] == step
    sa.pop("elapsed"), sb.pop("elapsed")
    _same(sa, sb, "state")
    assert _log(a) == _log(b) and len(_log(a)) > 0


def assert_resume_exact(
    tmp_path,
    config,
    overrides,
    *,
    steps: int = 4,
    stop_at: int = 2,
    command: str = "train",
    resume_overrides=None,
    keys=(),
) -> tuple[Path, Path]:
    """``nudiff COMMAND CONFIG --set ...`` (``config`` None: the data-only file of
    :func:`train_args`) trains run ``a`` straight to ``steps``, and run ``b`` to ``stop_at``
    and then, ``--resume``d (with ``resume_overrides`` if given, else ``overrides``), on to
    ``steps``; b ends where a does (:func:`assert_same_checkpoint`). Returns ``a, b``."""
    from nudiff.cli import main

    config = str(data_only_config(tmp_path) if config is None else config)
    a, b = tmp_path / "a", tmp_path / "b"
    cmd = [*command.split(), config]
    again = overrides if resume_overrides is None else resume_overrides
    assert main([*cmd, "--out", str(a), *sets(merge([*overrides, f"train.steps={steps}"]))]) == 0
    assert main([*cmd, "--out", str(b), *sets(merge([*overrides, f"train.steps={stop_at}"]))]) == 0
    assert (b / "checkpoints" / f"step_{stop_at:06d}").is_dir()
    resumed = sets(merge([*again, f"train.steps={steps}"]))
    assert main([*cmd, "--out", str(b), "--resume", *resumed]) == 0
    assert_same_checkpoint(a, b, steps, keys)
    return a, b
