"""Factories: turn a validated :class:`~nudiff.config.Config` into objects."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from nudiff.bases import DCT, PCA, Basis, Fourier, Haar, Identity
from nudiff.config import Config
from nudiff.data import build_dataset, load_batch
from nudiff.losses import DenoisingLoss
from nudiff.models import UNet
from nudiff.models.denoiser import Denoiser
from nudiff.prior import Prior, moments
from nudiff.process import Process
from nudiff.schedules import (
    EDM,
    VE,
    MultiSpeed,
    RectifiedFlow,
    Schedule,
    Sequential,
    SoftConditioning,
    VPCosine,
    VPLinear,
)


def default_haar_levels(resolution: int) -> int:
    """As many levels as keep the coarsest band at least 4x4."""
    levels = 0
    while resolution % 2 ** (levels + 1) == 0 and resolution // 2 ** (levels + 1) >= 4:
        levels += 1
    return levels


def data_shape(cfg: Config) -> tuple[int, int, int]:
    return (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)


def _sample_images(dataset: Dataset, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    return load_batch(dataset, idx.tolist())


def build_basis(cfg: Config, dataset: Dataset | None = None) -> Basis:
    """The basis; PCA is fitted on ``dataset`` when given, else a placeholder to load into."""
    shape, b = data_shape(cfg), cfg.process.basis
    if b.type == "identity":
        return Identity(shape)
    if b.type == "haar":
        levels = b.levels if b.levels is not None else default_haar_levels(shape[1])
        return Haar(shape, levels)
    if b.type == "dct":
        return DCT(shape)
    if b.type == "fourier":
        return Fourier(shape)
    if dataset is None:
        return PCA(shape)
    return PCA.fit(_sample_images(dataset, b.pca_samples, cfg.train.seed))


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
        return VPCosine(**kw)
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
    label = basis.label(kw.pop("label"))
    if s.type == "soft":
        return SoftConditioning(label, **kw)
    return Sequential(label, **kw)


def build_process(cfg: Config, dataset: Dataset | None = None) -> Process:
    """The process. Data-dependent parts (PCA, data-matched prior) are fitted on ``dataset``
    when given; otherwise they are placeholders to be filled by ``load_state_dict``."""
    basis = build_basis(cfg, dataset)
    prior = Prior.white(basis.shape)
    if cfg.process.prior.type == "data" and dataset is not None:
        images = _sample_images(dataset, cfg.process.prior.fit_samples, cfg.train.seed + 1)
        prior = Prior.fit(basis, images.split(512))
    return Process(basis, build_schedule(cfg, basis), prior)


def build_denoiser(cfg: Config, process: Process, dataset: Dataset | None = None) -> Denoiser:
    """The preconditioned denoiser; with ``model.sigma_data: data`` its per-component moments
    are measured on ``dataset`` (without one they are placeholders for ``load_state_dict``)."""
    u = cfg.model.unet
    backbone = UNet(
        in_channels=process.shape[0],
        channels=u.channels,
        channel_mult=tuple(u.channel_mult),
        num_res_blocks=u.num_res_blocks,
        attn_levels=tuple(u.attn_levels),
        dropout=u.dropout,
        head_channels=u.head_channels,
        noise_features=Denoiser.noise_features(process),
    )
    m = cfg.model
    if m.sigma_data != "data":
        return Denoiser(process, backbone, m.prediction, sigma_data=m.sigma_data)
    mean = std = None
    if dataset is not None:
        images = _sample_images(dataset, m.stats_samples, cfg.train.seed + 2)
        mean, std = moments(process.encode, images.split(512), "model.sigma_data: data")
        std = group_rms(std, process.basis)
    return Denoiser(process, backbone, m.prediction, data_mean=mean, data_std=std)


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


def build_loss(cfg: Config, process: Process, denoiser: Denoiser) -> DenoisingLoss:
    l = cfg.loss
    return DenoisingLoss(
        process,
        l.weighting,
        cfg.model.prediction,
        denoiser.data_std,
        l.min_snr_gamma,
        l.band_weights,
        l.t_sampling,
        l.t_interval,
    )


def build_data(cfg: Config, split: str = "train") -> Dataset:
    return build_dataset(cfg.data, split=split)
