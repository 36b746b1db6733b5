"""GPU-time estimates of the paper-scale configs (``configs/paper/*.yaml``), from counted MACs.

Every network of a config is built with its parameters on PyTorch's ``meta`` device (no memory,
no arithmetic), its multiply-accumulates per image are counted by the backbones' own
``count_macs`` (convolutions, linear layers and attention matmuls; normalisations and
activations are not counted), and the training cost is

    FLOPs = 2 FLOPs per MAC x forward-equivalent passes per image x MACs x images,

with 3 passes for an ordinary training step (forward, and a backward of about twice the
forward), and more where a family runs its networks several times per image (a Neural Diffusion
Model's transform, SiD's three networks; see :func:`training_macs`). GPU hours divide the FLOPs
by an assumed sustained rate: :data:`PEAK` (an A100's dense bf16 tensor-core peak) times
:data:`UTILISATION`. These are estimates from counted arithmetic, not measured GPU runs.

    python scripts/paper_estimates.py            # the markdown table of docs/paper.md
    python scripts/paper_estimates.py --json     # the same figures as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "src" / "nudiff" / "configs" / "paper"
PEAK = 312e12  #: FLOP/s, NVIDIA A100 dense bf16 (tensor cores)
UTILISATION = 0.4  #: the share of the peak assumed sustained over a training run
TRAIN_PASSES = 3  #: forward + backward (about twice the forward) per image and network


def paper_configs() -> list[Path]:
    return sorted(PAPER_DIR.glob("*.yaml"))


@contextlib.contextmanager
def meta_backbones():
    """Build every backbone (UNet, DiT, LEGO, MLP) with its parameters on the ``meta`` device:
    full-size networks cost no memory and no initialisation arithmetic, while the small
    tensors around them (bases, schedules, preconditioning) stay real."""
    import nudiff.build as build

    original = build.build_backbone

    def on_meta(*args, **kwargs):
        with torch.device("meta"):
            return original(*args, **kwargs)

    build.build_backbone = on_meta
    try:
        yield
    finally:
        build.build_backbone = original


def load(path: str | Path, overrides: list[str] | None = None):
    """The validated config of ``path``; a SiD config names a teacher run that need not exist
    here, so its ``distill`` section is checked but the model is the teacher's architecture."""
    from nudiff.config import load_config

    return load_config(path, overrides)


def meta_model(cfg):
    """The config's trainable network(s) on the meta device: the family's model (a SiD
    distillation: the teacher's architecture, of which SiD trains two copies)."""
    from nudiff.build import build_denoiser, build_process

    if cfg.distill is not None:  # SiD: generator and fake score are copies of the teacher
        cfg = cfg.model_copy(update={"distill": None})
    with meta_backbones():
        process = build_process(cfg)
        return build_denoiser(cfg, process)


def parameters(cfg, model=None) -> int:
    """Trainable parameters of the config's model (SiD: generator + fake score, 2x the
    teacher's)."""
    model = meta_model(cfg) if model is None else model
    n = sum(p.numel() for p in model.parameters())
    return 2 * n if cfg.distill is not None else n


def _backbones(model) -> list[tuple[torch.nn.Module, int]]:
    """``(backbone, resolution)`` of each network a training image passes through, with the
    resolution it runs at."""
    scales = getattr(model, "scales", None)
    if scales is not None:  # multi-scale: one network per scale, at that scale's size
        return [(d.backbone, d.process.shape[-1]) for d in scales]
    return [(model.backbone, model.process.shape[-1])]


def _macs(backbone, resolution: int) -> int:
    with torch.device("meta"):
        return int(backbone.count_macs(resolution, resolution))


def training_macs(cfg, model) -> float:
    """Multiply-accumulates of one training image, in forward-equivalent passes:

    - one network: ``3 x`` its MACs at the data resolution;
    - multi-scale (MSDiff, MSF): one scale per step, so the mean over scales (weighted by
      ``model.multiscale.scale_weights``) of ``3 x`` that scale's network at its size;
    - Patch Diffusion: per loaded image, a crop of size ``p`` with probability ``q_p`` (each
      step loads ``(R/p)^2`` times the batch with ``batch_multiplier``: the mean cost per
      image loaded is ``sum q_p (R/p)^2 MACs(p) / sum q_p (R/p)^2``);
    - a Neural Diffusion Model: the denoiser once and the transform six times (at both ends of
      the process, and at ``x`` and at ``x_hat`` each with its time derivative by a
      forward-mode JVP, about two passes each), all ``x 3`` for the backward;
    - SiD: 11 passes of the teacher-sized network per generated image (fake-score phase: the
      generator without gradients and the fake score forward and backward, 4; generator phase:
      the generator forward and backward, 3, then the teacher and the fake score forward and
      backward to their inputs, 2 each).
    """
    if cfg.distill is not None:
        ((backbone, res),) = _backbones(model)
        return 11 * _macs(backbone, res)
    if cfg.process.transform is not None:  # NDM
        d, t = model.denoiser, model.transform
        res = d.process.shape[-1]
        f = 0 if t.identity else 6 * _macs(t.backbone, res)
        return TRAIN_PASSES * (_macs(d.backbone, res) + f)
    nets = _backbones(model)
    if len(nets) > 1:
        ms = cfg.model.multiscale
        weights = ms.scale_weights or [1.0] * len(nets)
        total = sum(weights)
        return TRAIN_PASSES * sum(
            w / total * _macs(b, r) for w, (b, r) in zip(weights, nets, strict=True)
        )
    ((backbone, res),) = nets
    patch = cfg.train.patch
    if patch is None:
        return TRAIN_PASSES * _macs(backbone, res)
    probs = patch.probs or [1.0] * len(patch.sizes)
    loads = [
        q * ((res / p) ** 2 if patch.batch_multiplier else 1.0)
        for q, p in zip(probs, patch.sizes, strict=True)
    ]
    cost = sum(n * _macs(backbone, p) for n, p in zip(loads, patch.sizes, strict=True))
    return TRAIN_PASSES * cost / sum(loads)


def images_seen(cfg) -> float:
    """Training images (SiD: generated images) over the run: ``batch_size x steps``, with
    Patch Diffusion's batch multiplier averaged over the patch sizes."""
    n = cfg.train.batch_size * cfg.train.steps
    patch = cfg.train.patch
    if patch is not None and patch.batch_multiplier:
        probs = patch.probs or [1.0] * len(patch.sizes)
        res = cfg.data.resolution
        n *= sum(q * (res / p) ** 2 for q, p in zip(probs, patch.sizes, strict=True)) / sum(probs)
    return float(n)


def estimate(path: str | Path) -> dict:
    cfg = load(path)
    model = meta_model(cfg)
    macs = training_macs(cfg, model)  # forward-equivalent MACs per training image
    images = images_seen(cfg)
    flops = 2 * macs * images
    return {
        "config": Path(path).stem,
        "parameters": parameters(cfg, model),
        "train_gmacs_per_image": macs / 1e9,
        "images": images,
        "train_flops": flops,
        "gpu_hours": flops / (PEAK * UTILISATION) / 3600,
    }


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| config | parameters | training GMACs per image | images seen | training FLOPs | "
        "A100-hours (est.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['parameters'] / 1e6:.1f}M | {r['train_gmacs_per_image']:.2f} "
            f"| {_si(r['images'])} | {r['train_flops']:.2e} | {r['gpu_hours']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", help="config files (default: every configs/paper one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = p.parse_args(argv)
    rows = [estimate(c) for c in (args.configs or paper_configs())]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    if not args.json:
        print(
            f"\nAssumed sustained rate: {UTILISATION:.0%} of an A100's {PEAK / 1e12:.0f} "
            "TFLOP/s (dense bf16); FLOPs = 2 x forward-equivalent MACs x images."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
