"""A conditional model from a config: the task and the joint denoiser."""

from __future__ import annotations

import torch


def build_task(cfg):
    """The ``conditional.task`` of a config."""
    from nudiff.conditional.tasks import build_task as make

    c = cfg.conditional
    return make(c.task, **({"coverage": c.coverage} if c.task.startswith("inpaint") else {}))


def build_conditional(cfg, process, dataset=None):
    """A :class:`~nudiff.conditional.estimators.ConditionalDenoiser`: one backbone on
    ``concat(x, y)``, with outputs for ``y`` too when ``y`` diffuses; with ``model.multiscale``
    a :class:`~nudiff.conditional.estimators.ConditionalMultiScale` of one per scale. With
    ``model.sigma_data: data`` the stds of ``x``'s components are measured on ``dataset`` (per
    basis group; placeholders without one, for ``load_state_dict``) and ``y`` takes 0.5."""
    std = _data_std(cfg, process, dataset)
    if cfg.model.multiscale is not None:
        return _build_multiscale(cfg, process, std)
    return _build_one(cfg, process, cfg, None, None, data_std=std)


def _data_std(cfg, process, dataset):
    from nudiff.build import _data_moments

    if cfg.model.sigma_data != "data":
        return None
    if dataset is None:
        return torch.ones(process.shape)
    return _data_moments(cfg, process, dataset)[1]


def _build_one(cfg, process, scale_cfg, width, shared, image_shape=None, data_std=None):
    """The conditional denoiser on ``process`` (a multi-scale model's scale: its sub-process,
    ``scale_cfg`` with the scale's model overrides, its ``width``, or the ``shared`` backbone)."""
    from nudiff.build import build_backbone
    from nudiff.conditional.estimators import ConditionalDenoiser, split_condition

    c, task = cfg.conditional, build_task(cfg)
    y_shape = task.y_shape(image_shape or process.shape)
    values, _ = split_condition(task, torch.zeros(1, *y_shape))
    joint = c.estimator != "cde"
    backbone = shared or build_backbone(
        scale_cfg,
        process.shape[0] + y_shape[0],
        noise_features=2,
        width=width,
        resolution=None if image_shape is None else process.shape[-1],
        out_channels=process.shape[0] + (values.shape[1] if joint else 0),
    )
    return ConditionalDenoiser(
        process,
        task,
        backbone,
        c.estimator,
        c.y_log_snr_min,
        0.5 if cfg.model.sigma_data == "data" else float(cfg.model.sigma_data),
        c.anneal_steps,
        image_shape,
        data_std,
    )


def _build_multiscale(cfg, process, std):
    from nudiff.build import build_backbone
    from nudiff.conditional.estimators import ConditionalMultiScale, split_condition
    from nudiff.models.config import stage_model
    from nudiff.models.multiscale import coarse_process, stages

    m, ms = cfg.model, cfg.model.multiscale
    y_shape = build_task(cfg).y_shape(process.shape)
    shared = None
    if ms.share:
        values, _ = split_condition(build_task(cfg), torch.zeros(1, *y_shape))
        extra = values.shape[1] if cfg.conditional.estimator != "cde" else 0
        c = process.shape[0]
        shared = build_backbone(cfg, c + y_shape[0], noise_features=2, out_channels=c + extra)
    scales = []
    for s, d in enumerate(stages(process)[1]):
        sub = coarse_process(process, d)
        _, h, w = sub.shape
        scale_cfg = cfg.model_copy(update={"model": stage_model(m, s)})
        width = ms.channels[s] if ms.channels else None
        sub_std = None if std is None else std[..., :h, :w]  # the scale's block of components
        scales.append(_build_one(cfg, sub, scale_cfg, width, shared, process.shape, sub_std))
    return ConditionalMultiScale(process, scales)


def build_conditional_loss(cfg, model):
    """The :class:`~nudiff.conditional.estimators.ConditionalLoss` of ``model``; for a
    multi-scale model a :class:`~nudiff.losses.MultiScaleLoss` of one per scale (each in its
    scale's time interval)."""
    from nudiff.conditional.estimators import ConditionalLoss, ConditionalMultiScale
    from nudiff.losses import MultiScaleLoss

    l = cfg.loss
    times = (l.t_sampling, l.log_snr_mean, l.log_snr_std)
    if not isinstance(model, ConditionalMultiScale):
        return ConditionalLoss(model, *times)
    losses = [
        ConditionalLoss(scale, *times, interval=model.interval(s), dropped=d)
        for s, (scale, d) in enumerate(zip(model.scales, model.dropped, strict=True))
    ]
    ms = cfg.model.multiscale
    return MultiScaleLoss(model, losses, ms.scale_sampling, ms.scale_weights, seed=cfg.train.seed)
