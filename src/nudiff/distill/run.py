"""Distilled runs: the config of a SiD run, its networks, training and loading.

A distilled run folder is an ordinary run folder: ``config.yaml`` is the teacher's config plus a
``distill`` section (which names the teacher's checkpoint) and distillation's ``train`` and
``sample`` settings; its checkpoints hold the generator and the fake score (the teacher is
read from its own checkpoint, not copied). ``nudiff sample RUN`` samples the generator.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from nudiff.config import Config, parse_overrides, parse_yaml, set_key, validate
from nudiff.distill.sid import ReferenceTime, SiDGenerator, SiDLoss, SiDModel

#: distillation's training settings over the teacher's (SiD: Adam betas (0, 0.999), no
#: warm-up, no clipping; the LR is SiD's CIFAR-10 one); ``--set`` overrides them
DISTILL_TRAIN = {
    "lr": 1e-5,
    "betas": [0.0, 0.999],
    "warmup_steps": 0,
    "lr_schedule": "constant",
    "grad_clip": 0.0,
    "weight_decay": 0.0,
    "ema_halflife_images": 20_000,
    "ema_warmup_ratio": 0.05,
    "patch": None,
}


def distill_config(teacher: str | Path, overrides: list[str] | None = None) -> Config:
    """The config of a SiD run of the teacher run (or checkpoint folder) ``teacher``: the
    teacher's config, ``distill: {method: sid, teacher: <its checkpoint folder>}``,
    :data:`DISTILL_TRAIN`, ``sample: {sampler: onestep, steps: 1}``, then ``overrides``;
    ``sample.steps`` follows ``distill.steps`` unless an override sets it."""
    from nudiff.families.features import require
    from nudiff.training.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(teacher)
    tree = parse_yaml((ckpt / "config.yaml").read_text(), str(ckpt / "config.yaml")) or {}
    if tree.get("distill") is not None:
        raise ValueError(f"{teacher} is a distilled run; distil its teacher instead")
    require(validate(copy.deepcopy(tree)), "teacher")
    if (tree.get("model") or {}).get("multiscale") is not None:
        warnings.warn(
            "SiD of a multi-scale teacher: the generator starts from the finest stage, whose "
            "inputs have almost clean coarse bands, so it cannot vary the coarse structure "
            "(measured on MNIST: FD 196 against the teacher's 3.1); distil a single-scale "
            "teacher for a working one-step generator",
            stacklevel=2,
        )
    tree["distill"] = {"method": "sid", "teacher": str(ckpt.resolve())}
    tree.setdefault("train", {}).update(DISTILL_TRAIN)
    tree["sample"] = {**tree.get("sample", {}), "sampler": "onestep", "steps": 1}
    for key in ("options", "budgets", "grid", "skip"):
        tree["sample"].pop(key, None)
    pairs = parse_overrides(overrides)
    for key, value in pairs:
        set_key(tree, key, value)
    steps = (tree.get("distill") or {}).get("steps", 1)
    if not any(key in ("sample", "sample.steps") for key, _ in pairs) and isinstance(steps, int):
        tree["sample"]["steps"] = steps  # a k-step generator samples with its k steps
    return validate(tree)


def _generator_network(denoiser: nn.Module) -> nn.Module:
    """The network a generator starts from: the denoiser, or a multi-scale model's
    full-resolution (finest) stage."""
    scales = getattr(denoiser, "scales", None)
    return copy.deepcopy(scales[0] if scales is not None else denoiser)


def step_times(cfg: Config, reference: ReferenceTime) -> list[float]:
    """The generator's step times ``t_1 > ... > t_k``: where the mean log-SNR takes
    ``cfg.distill``'s :meth:`~nudiff.distill.config.SiDConfig.step_log_snrs`."""
    return [float(reference.time(torch.tensor(lam))) for lam in cfg.distill.step_log_snrs()]


def sid_model(cfg: Config, teacher: nn.Module, reference: ReferenceTime) -> SiDModel:
    """Generator (of ``distill.steps`` steps) and fake score, both initialised from
    ``teacher``."""
    generator = SiDGenerator(_generator_network(teacher), step_times(cfg, reference))
    fake = copy.deepcopy(teacher)
    return SiDModel(generator, fake).requires_grad_(True).train()


def build_sid(cfg: Config, device=None) -> tuple[SiDModel, SiDLoss]:
    """The trainable SiD model and its loss, from the teacher named in ``cfg.distill``."""
    from nudiff.build import build_loss
    from nudiff.run import load_run

    tcfg, teacher = load_run(cfg.distill.teacher, device=device)
    if tcfg.model.model_dump() != cfg.model.model_dump():
        raise ValueError("distill: the config's model section must be the teacher's")
    process = teacher.process
    reference = ReferenceTime(process)
    model = sid_model(cfg, teacher, reference)
    d = cfg.distill
    loss = SiDLoss(
        process,
        teacher,
        build_loss(cfg, process, model.fake),
        alpha=d.alpha,
        scale=d.scale,
        t_max=d.t_max,
        sigma_min=d.sigma_min,
        sigma_max=d.sigma_max,
        rho=d.rho,
        num_classes=cfg.model.num_classes,
        guidance=d.guidance,
        reference=reference,
        steps=d.steps,
        guidance_fake=d.guidance_fake,
        guidance_fake_eval=d.fake_eval_guidance,
    )
    return model, loss


def distill(cfg: Config, run_dir: str | Path, resume: bool = False, device=None) -> dict:
    """Train the SiD run ``cfg`` into ``run_dir`` on ``device``: :func:`nudiff.run.train` (the
    generic trainer, data-free, two phases); returns the trainer's summary."""
    from nudiff.run import train

    return train(cfg, run_dir, resume=resume, device=device)


def load_generator(cfg: Config, denoiser: nn.Module, state: dict) -> SiDGenerator:
    """The generator of a distilled run from its checkpoint ``state``; ``denoiser``: the
    teacher's architecture (weights unused)."""
    model = sid_model(cfg, denoiser, ReferenceTime(denoiser.process))
    model.load_state_dict(state)
    return model.generator
