"""Factories: turn a validated :class:`~nudiff.config.Config` into objects.

:func:`build_process`, :func:`build_denoiser` and :func:`build_loss` ask the config's family
(:mod:`nudiff.families`); the rest are the pieces families share: the data, the linear
process (basis, schedule, prior), the backbones, and the denoisers and losses of the linear
process (one network, or one per scale)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from nudiff.bases import DCT, PCA, Basis, Fourier, Haar, Identity
from nudiff.data import build_dataset, load_batch
from nudiff.families import family_of
from nudiff.losses import (
    ClassLabels,
    DenoisingLoss,
    JointBricks,
    MultiScaleLoss,
    PatchCrops,
    SoftnessRange,
    TimeSampling,
    Weighting,
)
from nudiff.models import UNet
from nudiff.models.config import lego_bricks, stage_model
from nudiff.models.denoiser import Denoiser
from nudiff.models.multiscale import MultiScaleDenoiser, coarse_process, stages
from nudiff.prior import Prior, moments
from nudiff.process import Process
from nudiff.schedules import (
    EDM,
    MSF,
    VE,
    BlurringDiffusion,
    MultiSpeed,
    RectifiedFlow,
    Schedule,
    Sequential,
    SoftConditioning,
    VPCosine,
    VPLinear,
)

if TYPE_CHECKING:  # annotations only: the config module validates with the families
    from nudiff.config import Config


def data_shape(cfg: Config) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the config's images (``data.width`` null: square)."""
    return cfg.data.image_shape


def sample_images(dataset: Dataset, n: int, seed: int) -> torch.Tensor:
    """``n`` images of ``dataset`` (at most all), drawn without replacement by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    return load_batch(dataset, idx.tolist())


def build_basis(cfg: Config, dataset: Dataset | None = None) -> Basis:
    """The basis; PCA is fitted on ``dataset`` when given, else a placeholder to load into."""
    shape, b = data_shape(cfg), cfg.process.basis
    if b.type == "identity":
        return Identity(shape)
    if b.type == "haar":
        return Haar(shape, cfg.haar_levels())
    if b.type == "dct":
        return DCT(shape)
    if b.type == "fourier":
        return Fourier(shape)
    if dataset is None:
        return PCA(shape)
    return PCA.fit(sample_images(dataset, b.pca_samples, cfg.train.seed))


def bands_fine_to_coarse(basis: Basis) -> torch.Tensor:
    """Band index ``(C, H, W)`` per component, 0 for the group of highest mean frequency."""
    index, names = basis.groups()
    freq = basis.labels()["frequency"].double().flatten()
    mean = torch.zeros(len(names), dtype=torch.float64).index_add_(0, index.flatten(), freq)
    mean /= torch.bincount(index.flatten(), minlength=len(names))
    rank = torch.empty(len(names), dtype=torch.long)
    rank[torch.argsort(mean, descending=True, stable=True)] = torch.arange(len(names))
    return rank[index]


def build_schedule(cfg: Config, basis: Basis) -> Schedule:
    s = cfg.process.schedule
    kw = s.model_dump(exclude={"type"})
    if s.type == "vp-cosine":
        shift, shift_to = s.shifts()
        return VPCosine(s.log_snr_min, s.log_snr_max, shift, shift_to)
    if s.type == "vp-linear":
        return VPLinear(**kw)
    if s.type == "ve":
        return VE(**kw)
    if s.type == "edm":
        return EDM(**kw)
    if s.type == "rectified-flow":
        return RectifiedFlow(**kw)
    if s.type == "multispeed":
        return MultiSpeed(bands_fine_to_coarse(basis), **kw)
    if s.type == "msf":
        kw.pop("levels")  # the basis's, checked by the config
        return MSF(bands_fine_to_coarse(basis), **kw)
    if s.type == "blurring":  # on the dct basis (checked by the config): its frequencies
        return BlurringDiffusion(basis.shape, **kw)
    label = basis.label(kw.pop("label"))
    if s.type == "soft":
        return SoftConditioning(label, **kw)
    return Sequential(label, **kw)


def build_process(cfg: Config, dataset: Dataset | None = None):
    """The process of the config's family. Data-dependent parts (PCA, data-matched prior) are
    fitted on ``dataset`` when given; otherwise they are placeholders to be filled by
    ``load_state_dict``."""
    return family_of(cfg).build_process(cfg, dataset)


def build_denoiser(cfg: Config, process, dataset: Dataset | None = None):
    """The model of the config's family (data moments measured on ``dataset``; without one,
    placeholders for ``load_state_dict``)."""
    return family_of(cfg).build_model(cfg, process, dataset)


def build_loss(cfg: Config, process, model):
    """The training loss of the config's family."""
    return family_of(cfg).build_loss(cfg, process, model)


def build_linear_process(cfg: Config, dataset: Dataset | None = None) -> Process:
    """The linear process of ``process.basis``, ``process.schedule`` and ``process.prior``."""
    basis = build_basis(cfg, dataset)
    prior = Prior.white(basis.shape)
    if cfg.process.prior.type == "data" and dataset is not None:
        images = sample_images(dataset, cfg.process.prior.fit_samples, cfg.train.seed + 1)
        prior = Prior.fit(basis, images.split(512))
    return Process(basis, build_schedule(cfg, basis), prior)


def fit_channel_mult(channel_mult, resolution: int) -> list[int]:
    """``channel_mult`` without the deepest levels that a ``resolution`` image cannot reach: each
    level halves the image, and the deepest feature map must stay at least 2x2 (a 1x1 map has
    one value per GroupNorm group)."""
    mult = list(channel_mult)
    while len(mult) > 1 and (resolution % 2 ** (len(mult) - 1) or resolution >> len(mult) - 1 < 2):
        mult.pop()
    return mult


def build_unet(
    cfg: Config,
    in_channels: int,
    noise_features: int,
    width: int | None = None,
    resolution=None,
    out_channels: int | None = None,
) -> UNet:
    """The configured UNet; ``width`` replaces ``unet.channels``; with a ``resolution`` the
    levels it cannot reach are left out (:func:`fit_channel_mult`: the coarse scales of a
    multi-scale model); ``out_channels`` defaults to ``in_channels``."""
    u = cfg.model.unet
    mult = fit_channel_mult(u.channel_mult, resolution) if resolution else list(u.channel_mult)
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        channels=width or u.channels,
        channel_mult=tuple(mult),
        num_res_blocks=u.num_res_blocks,
        attn_levels=tuple(a for a in u.attn_levels if a < len(mult)),
        dropout=u.dropout,
        head_channels=u.head_channels,
        noise_features=noise_features,
        num_classes=cfg.model.num_classes,
        coord_channels=u.coord_channels,
    )


def build_backbone(
    cfg: Config,
    in_channels: int,
    noise_features: int,
    width: int | None = None,
    resolution: int | None = None,
    out_channels: int | None = None,
):
    """The configured ``model.backbone`` (UNet, DiT or LEGO) for ``resolution`` x
    ``resolution`` images (default: the config's, ``data.resolution`` x ``data.width``);
    ``width`` replaces the backbone's base width (a multi-scale model's per-scale widths)."""
    m = cfg.model
    _, height, cols = data_shape(cfg)
    if resolution:
        height = cols = resolution
    if m.backbone == "unet":
        return build_unet(cfg, in_channels, noise_features, width, resolution, out_channels)
    if m.backbone == "mlp":
        from nudiff.models.mlp import MLP

        return MLP(
            (in_channels, height, cols),
            width=width or m.mlp.width,
            depth=m.mlp.depth,
            noise_features=noise_features,
            out_channels=out_channels,
        )
    if m.backbone == "dit":
        from nudiff.models.dit import DiT

        d = m.dit
        return DiT(
            in_channels,
            out_channels,
            patch_size=d.patch_size,
            width=width or d.width,
            depth=d.depth,
            heads=d.heads,
            mlp_ratio=d.mlp_ratio,
            noise_features=noise_features,
            coord_channels=d.coord_channels,
            num_classes=m.num_classes,
            stem_channels=d.stem_channels,
            conv_head=d.conv_head,
            skips=d.skips,
        )
    from nudiff.models.lego import LEGO

    bricks = lego_bricks(m.lego, height, cols)
    if width:  # a per-scale width scales every brick alike
        bricks = [(r, p, d, max(m.lego.heads, w * width // m.lego.width)) for r, p, d, w in bricks]
    return LEGO(
        in_channels,
        out_channels,
        bricks=bricks,
        heads=m.lego.heads,
        mlp_ratio=m.lego.mlp_ratio,
        noise_features=noise_features,
        num_classes=m.num_classes,
        stem_channels=m.lego.stem_channels,
        conv_head=m.lego.conv_head,
        skips=m.lego.skips,
    )


def _data_moments(cfg: Config, process: Process, dataset: Dataset | None):
    """Per-component data mean and per-group std in whitened components (None without data or
    with a numeric ``sigma_data``)."""
    m = cfg.model
    if m.sigma_data != "data" or dataset is None:
        return None, None
    images = sample_images(dataset, m.stats_samples, cfg.train.seed + 2)
    mean, std = moments(process.encode, images.split(512), "model.sigma_data: data")
    return mean, group_rms(std, process.basis)


def build_linear_denoiser(cfg: Config, process: Process, dataset: Dataset | None = None):
    """The preconditioned :class:`Denoiser` around the configured backbone; with
    ``model.sigma_data: data`` its per-component moments are measured on ``dataset`` (without
    one they are placeholders for ``load_state_dict``)."""
    m = cfg.model
    features = Denoiser.noise_features(process, conditioning=m.noise_conditioning)
    backbone = build_backbone(cfg, process.shape[0], features)
    kw = {"noise_conditioning": m.noise_conditioning}
    if m.sigma_data != "data":
        return Denoiser(process, backbone, m.prediction, sigma_data=m.sigma_data, **kw)
    mean, std = _data_moments(cfg, process, dataset)
    return Denoiser(process, backbone, m.prediction, data_mean=mean, data_std=std, **kw)


def build_multiscale(
    cfg: Config, process: Process, dataset: Dataset | None = None
) -> MultiScaleDenoiser:
    """One :class:`Denoiser` per scale (stage) on :func:`coarse_process`, each conditioned on
    the full process's bands (the dropped ones reported as noise), around one network per
    scale (with its ``model.multiscale.stages`` overrides) or a shared one. Data moments are
    measured once at full resolution and cropped."""
    m, ms = cfg.model, cfg.model.multiscale
    features = Denoiser.noise_features(process, conditioning=m.noise_conditioning)
    shared = build_backbone(cfg, process.shape[0], features) if ms.share else None
    mean, std = _data_moments(cfg, process, dataset)
    scales = []
    for s, d in enumerate(stages(process)[1]):
        sub = coarse_process(process, d)
        _, h, w = sub.shape
        backbone = shared or build_backbone(
            cfg.model_copy(update={"model": stage_model(m, s)}),
            sub.shape[0],
            features,
            ms.channels[s] if ms.channels else None,
            h,
        )
        if m.sigma_data != "data":
            kw = {"sigma_data": m.sigma_data}
        elif mean is None:
            kw = {}  # placeholders, loaded from the state dict
        else:
            kw = {"data_mean": mean[..., :h, :w], "data_std": std[..., :h, :w]}
        kw["noise_conditioning"] = m.noise_conditioning
        scales.append(Denoiser(sub, backbone, m.prediction, absent_groups=d, **kw))
    return MultiScaleDenoiser(process, scales)


def group_rms(std: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Per-component stds ``(C, H, W)`` replaced by the root mean square of their basis group.

    Per-component estimates of rarely active components (a border pixel a digit seldom reaches,
    a wavelet detail off the usual edges) are tiny and heavy-tailed; EDM's ``1 / c_out^2``
    weighting would then let rare samples dominate the loss. Group values keep the scale
    differences between bands, which is what the preconditioning needs.
    """
    index, names = basis.groups()
    flat = index.flatten()
    var = torch.zeros(len(names), dtype=std.dtype).index_add_(0, flat, std.flatten() ** 2)
    var = var / torch.bincount(flat, minlength=len(names))
    return var[index].sqrt().clamp_min(1e-3 * var.max().sqrt())


def build_denoising_loss(
    cfg: Config, process: Process, denoiser: Denoiser | MultiScaleDenoiser
) -> DenoisingLoss | MultiScaleLoss:
    """The denoising loss of the linear process: one network, or one scale per step (each
    scale's loss on its sub-process, in its time interval, with the weights of its bands)."""
    if not isinstance(denoiser, MultiScaleDenoiser):
        return _denoising_loss(cfg, process, denoiser, cfg.loss.t_interval, cfg.loss.band_weights)
    bands = cfg.loss.band_weights
    if bands is not None and len(bands) != process.basis.levels + 1:
        raise ValueError(
            f"loss.band_weights needs one weight per Haar band ({process.basis.levels + 1}, "
            f"finest first), got {len(bands)}"
        )
    losses = [
        _denoising_loss(
            cfg, d.process, d, denoiser.interval(s), None if bands is None else bands[dropped:]
        )
        for s, (d, dropped) in enumerate(zip(denoiser.scales, denoiser.dropped, strict=True))
    ]
    ms = cfg.model.multiscale
    return MultiScaleLoss(
        denoiser, losses, ms.scale_sampling, ms.scale_weights, seed=cfg.train.seed
    )


def _denoising_loss(cfg: Config, process: Process, denoiser, interval, band_weights):
    """The :class:`DenoisingLoss` of ``denoiser`` (a network, or one scale of a multi-scale
    model) on ``process``: ``loss``'s weighting (with ``band_weights``) and time sampling (in
    ``interval``), and the batch pieces of the config's features, in their order: a softness
    range, patch crops, class labels, LEGO's joint loss (for a LEGO network)."""
    l, m = cfg.loss, cfg.model
    sigma_data = getattr(denoiser, "data_std", 0.5)
    weighting = Weighting(
        process, l.weighting, m.prediction, sigma_data, l.min_snr_gamma, band_weights
    )
    times = TimeSampling(process, l.t_sampling, interval, l.log_snr_mean, l.log_snr_std)
    pieces = []
    if l.softness is not None:
        pieces.append(SoftnessRange(process, (l.softness.min, l.softness.max), cfg.train.seed))
    patch = build_patch_sizes(cfg, process)
    if patch is not None:
        pieces.append(PatchCrops(process, patch))
    if m.num_classes is not None:
        pieces.append(ClassLabels(m.num_classes, m.label_dropout))
    joint = JointBricks()
    if m.lego.joint_loss and joint.applies_to(denoiser):
        pieces.append(joint)
    return DenoisingLoss(process, weighting, times, pieces)


def build_patch_sizes(cfg: Config, process: Process):
    """The per-step patch sizes of ``train.patch`` (None without patch training)."""
    patch = cfg.train.patch
    if patch is None:
        return None
    from nudiff.patch import PatchSizes, crop_alignment

    return PatchSizes(
        patch.sizes,
        cfg.data.resolution,
        patch.probs,
        patch.batch_multiplier,
        seed=cfg.train.seed,
        align=crop_alignment(process.basis),
        schedule=patch.schedule,
        ramp_steps=patch.ramp_steps,
    )


def build_data(cfg: Config, split: str = "train", labelled: bool = False) -> Dataset:
    """The data split; ``labelled``: ``(image, label)`` items for a class-conditional model
    (``model.num_classes``), images otherwise."""
    classes = cfg.model.num_classes if labelled else None
    return build_dataset(cfg.data, split=split, num_classes=classes)
