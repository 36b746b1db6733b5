"""Toy model, loss and data for the training-engine tests, and a script they run in
subprocesses:

    torchrun --nproc_per_node 2 tests/train_worker.py ddp OUT   # 2-process runs
    python tests/train_worker.py slow-save RUN                  # checkpoint writes that crawl
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from conftest import QUICKSTART, tiny, tiny_distill
from nudiff.training import TrainConfig, Trainer


class ToyModel(nn.Module):
    """Two convolutions and a constant buffer (saved like a basis matrix would be)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 3).view(3, 1, 1))

    def forward(self, x):
        return self.net(x) * self.scale


class ToyLoss:
    """t ~ U(0, 1), eps ~ N(0, I); per-sample mse(model(x0 + t eps), x0)."""

    def draw(self, n, generator, step=0):
        dev = generator.device
        return {
            "t": torch.rand(n, generator=generator, device=dev),
            "eps": torch.randn(n, 3, 8, 8, generator=generator, device=dev),
        }

    def __call__(self, model, x0, noise):
        xt = x0 + noise["t"].view(-1, 1, 1, 1) * noise["eps"]
        return (model(xt) - x0).square().flatten(1).mean(1)


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 48, labels: bool = False):
        self.x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 2 - 1
        self.labels = labels

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i], i % 3) if self.labels else self.x[i]


def flip(x, generator):
    keep = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=generator.device) < 0.5
    return torch.where(keep, x, x.flip(-1))


def config(**kw) -> TrainConfig:
    base = dict(
        steps=4,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        grad_clip=1.0,
        ema_halflife_images=40,
        ema_warmup_ratio=0.5,
        log_every=1,
        checkpoint_every=2,
        keep_checkpoints=2,
        sample_every=0,
        num_workers=0,
        tensorboard=False,
    )
    return TrainConfig(**{**base, **kw})


def make_trainer(run_dir, dropout: float = 0.0, **kw) -> Trainer:
    torch.manual_seed(0)
    return Trainer(ToyModel(dropout), ToyLoss(), ToyData(), config(**kw), run_dir)


def _ddp(out: Path) -> None:
    from nudiff.training import distributed

    for accum in (1, 2):
        make_trainer(out / f"accum{accum}", steps=3, grad_accum=accum).fit()
    distributed.cleanup()


# the multi-scale quick-start model, tiny: 3 steps train each of its 3 scales once
MULTISCALE_TINY = tiny(
    "data.size=64",
    "model.multiscale.scale_sampling=round-robin",
    "model.multiscale.scale_weights=null",
    steps=3,
    checkpoint_every=3,
)


def multiscale_config():
    from nudiff.config import load_config

    return load_config(QUICKSTART, MULTISCALE_TINY)


def _ddp_multiscale(out: Path) -> None:
    from nudiff.run import train
    from nudiff.training import distributed

    train(multiscale_config(), out)
    distributed.cleanup()


# a tiny pixel-space class-conditional LEGO model (joint loss over its 2 bricks, labels with
# label dropout) on 8x8 shapes
LEGO_TINY = tiny(
    "data.resolution=8",
    "data.size=64",
    "model.num_classes=18",
    "process.basis.type=identity",
    "process.schedule={type: vp-cosine}",
    "model.backbone=lego",
    "model.lego={bricks: [[4, 2, 1, 16], [0, 2, 1, 16]], heads: 2}",
    steps=3,
    checkpoint_every=3,
    unet=False,
)


def lego_config():
    from nudiff.config import load_config

    return load_config(None, LEGO_TINY)


def _ddp_lego(out: Path) -> None:
    from nudiff.run import train
    from nudiff.training import distributed

    train(lego_config(), out)
    distributed.cleanup()


# SiD distillation of a tiny multi-scale teacher (``OUT/../teacher``): data-free, two phases
SID_TINY = tiny_distill(steps=2)


def _ddp_sid(out: Path) -> None:
    from nudiff.distill.run import distill, distill_config
    from nudiff.training import distributed

    distill(distill_config(out.parent / "teacher", SID_TINY), out)
    distributed.cleanup()


def _slow_save(run: Path) -> None:
    """Checkpoint every 2 steps; record what each save is given, then write each file slowly,
    so that the test can SIGKILL the process in the middle of a write."""
    from nudiff.training import checkpoint, trainer

    save, write = trainer.save_checkpoint, checkpoint._write

    def recorded_save(run_dir, step, model, ema, *args, **kw):
        torch.save({"model": model, "ema": ema}, run / f"expected_{step}.pt")
        (run / f"saving_{step}").touch()
        return save(run_dir, step, model, ema, *args, **kw)

    def slow_write(path, data):
        write(path, data)
        time.sleep(0.3)

    trainer.save_checkpoint, checkpoint._write = recorded_save, slow_write
    make_trainer(run, steps=1000, keep_checkpoints=10).fit()


if __name__ == "__main__":
    torch.set_num_threads(1)
    modes = {
        "ddp": _ddp,
        "ddp-multiscale": _ddp_multiscale,
        "ddp-lego": _ddp_lego,
        "ddp-sid": _ddp_sid,
        "slow-save": _slow_save,
    }
    modes[sys.argv[1]](Path(sys.argv[2]))
