"""Beta diffusion as a family: a multiplicative Beta process on pixels, its KLUB / ELBO loss and
its own sampler, sharing the trainer, checkpoints, CLI and evaluation."""

from __future__ import annotations

import torch

from nudiff.beta.config import BetaLossConfig, BetaProcessConfig
from nudiff.families.base import Family


class BetaFamily(Family):
    name = "beta"
    key = "process.family: beta"
    label = "Beta"
    selected_by = "process.family: beta"
    description = "Beta diffusion: a multiplicative Beta process on data in (0, 1), KLUB loss"
    sections = ("process.beta", "loss.beta")
    features = frozenset({"dit", "mlp", "resolution"})

    def claims(self, cfg) -> bool:
        return cfg.process.family == "beta"

    def samplers(self, cfg) -> tuple[str, ...]:
        from nudiff.beta.sampler import SAMPLER

        return (SAMPLER,)

    def build_process(self, cfg, dataset=None):
        from nudiff.beta.process import BetaProcess
        from nudiff.build import data_shape

        section = cfg.process.beta or BetaProcessConfig()
        return BetaProcess(data_shape(cfg), **section.model_dump())

    def build_model(self, cfg, process, dataset=None):
        """A :class:`~nudiff.beta.denoiser.BetaDenoiser` around the configured backbone; its
        per-pixel data mean (the sampler's start) is measured on ``stats_samples`` images of
        ``dataset`` (without one, a placeholder for ``load_state_dict``)."""
        from nudiff.beta.denoiser import BetaDenoiser
        from nudiff.build import build_backbone, sample_images

        backbone = build_backbone(cfg, process.shape[0], BetaDenoiser.noise_features())
        mean = None
        if dataset is not None:
            images = sample_images(dataset, cfg.model.stats_samples, cfg.train.seed + 2)
            mean = process.to_unit(images).mean(0)
        return BetaDenoiser(process, backbone, mean)

    def build_loss(self, cfg, process, model):
        from nudiff.beta.loss import BetaDiffusionLoss

        b = cfg.loss.beta or BetaLossConfig()
        return BetaDiffusionLoss(process, b.type, b.w_cond, b.w_marg, b.s_ratio, b.t_min)

    def training_parts(self, cfg) -> dict:
        from nudiff.build import build_data
        from nudiff.data import random_hflip

        dataset = build_data(cfg)
        process = self.build_process(cfg, dataset)
        torch.manual_seed(cfg.train.seed)  # the same initial weights for the same config
        model = self.build_model(cfg, process, dataset)

        def sample_fn(model, n: int, generator: torch.Generator) -> torch.Tensor:
            device = next(model.parameters()).device
            out = self.sample(cfg, model, n, seed=cfg.train.seed, start=0, device=device)
            return out.images.clamp(-1, 1)

        return {
            "model": model,
            "loss": self.build_loss(cfg, process, model),
            "dataset": dataset,
            "sample_fn": sample_fn,
            "augment": random_hflip if cfg.data.hflip else None,
        }

    def sample(self, cfg, model, n, *, seed, start, device, labels=None, progress=False):
        from nudiff.beta.sampler import sample_beta

        steps = cfg.sample.steps
        return sample_beta(
            model, n, steps=steps, seed=seed, start=start, device=device, progress=progress
        )


FAMILY = BetaFamily()
