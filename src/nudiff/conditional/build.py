"""A conditional model from a config: the task and the joint denoiser."""

from __future__ import annotations

import torch


def build_task(cfg):
    """The ``conditional.task`` of a config."""
    from nudiff.conditional.tasks import build_task as make

    c = cfg.conditional
    return make(c.task, **({"coverage": c.coverage} if c.task.startswith("inpaint") else {}))


def build_conditional(cfg, process):
    """A :class:`~nudiff.conditional.estimators.ConditionalDenoiser`: one backbone on
    ``concat(x, y)``, with outputs for ``y`` too when ``y`` diffuses."""
    from nudiff.build import build_backbone
    from nudiff.conditional.estimators import ConditionalDenoiser, split_condition

    c, task = cfg.conditional, build_task(cfg)
    y_shape = task.y_shape(process.shape)
    values, _ = split_condition(task, torch.zeros(1, *y_shape))
    joint = c.estimator != "cde"
    backbone = build_backbone(
        cfg,
        process.shape[0] + y_shape[0],
        noise_features=2,
        out_channels=process.shape[0] + (values.shape[1] if joint else 0),
    )
    return ConditionalDenoiser(
        process,
        task,
        backbone,
        c.estimator,
        c.y_log_snr_min,
        float(cfg.model.sigma_data),
        c.anneal_steps,
    )
