"""The linear Gaussian process: ``u_t = alpha_i(t) u_0 + sigma_i(t) eps`` in a basis, with a
schedule per component. Standard diffusion, flow matching, MSDiff, MSF, GUD and the
conditional estimators (CDE, CMDE, ...) are its configurations and features."""

from __future__ import annotations

import torch

from nudiff.families import LINEAR_SAMPLERS
from nudiff.families.base import Family


def sample_settings(cfg) -> dict:
    """The keywords of :func:`nudiff.samplers.sample` that the config's ``sample`` section sets."""
    from nudiff.samplers import BrickSkip

    s = cfg.sample
    return {
        "sampler": s.sampler,
        "steps": s.steps,
        "grid": s.grid,
        "budgets": s.budgets,
        "options": s.options,
        "skip": BrickSkip.from_config(s.skip),
        "guidance": s.guidance,
        "guidance_interval": s.guidance_interval,
    }


class GaussianFamily(Family):
    name = "gaussian"
    key = "process.family: gaussian"
    label = "Gaussian"
    selected_by = "process.family: gaussian"
    description = (
        "the linear process in a basis, a schedule per component: diffusion, flow matching, "
        "MSDiff, MSF, GUD, conditional estimators"
    )
    features = frozenset(
        {
            "patch",
            "class-labels",
            "guidance",
            "softness-range",
            "multiscale",
            "brick-skipping",
            "log-normal-times",
            "conditional",
            "interval-steps",
            "time-grid",
            "optimized-grid",
            "basis",
            "data-prior",
            "dit",
            "lego",
            "mlp",
            "resolution",
            "likelihood",
            "teacher",
        }
    )

    def claims(self, cfg) -> bool:
        return cfg.process.family == "gaussian"

    def samplers(self, cfg) -> tuple[str, ...]:
        return LINEAR_SAMPLERS

    def check(self, cfg) -> None:
        if cfg.sample.grid == "optimized":
            from nudiff.samplers.optimized import deterministic

            s = cfg.sample
            if not deterministic(s.sampler, s.options):
                raise ValueError(
                    f"sample.grid: optimized needs a deterministic fixed-grid sampler (an ODE "
                    f"sampler, or ddim with eta 0), not sample.sampler: {s.sampler}"
                )
            if cfg.conditional is not None:
                raise ValueError("sample.grid: optimized does not apply to conditional tasks")

    # --------------------------------------------------------------------------- objects
    def build_process(self, cfg, dataset=None):
        from nudiff.build import build_linear_process

        return build_linear_process(cfg, dataset)

    def build_model(self, cfg, process, dataset=None):
        from nudiff.build import build_linear_denoiser, build_multiscale

        if cfg.conditional is not None:
            from nudiff.conditional.build import build_conditional

            return build_conditional(cfg, process, dataset)
        if cfg.model.multiscale is not None:
            return build_multiscale(cfg, process, dataset)
        return build_linear_denoiser(cfg, process, dataset)

    def build_loss(self, cfg, process, model):
        from nudiff.build import build_denoising_loss

        if cfg.conditional is not None:
            from nudiff.conditional.build import build_conditional_loss

            return build_conditional_loss(cfg, model)
        return build_denoising_loss(cfg, process, model)

    def training_parts(self, cfg) -> dict:
        from nudiff.build import build_data
        from nudiff.data import load_batch, random_hflip

        dataset = build_data(cfg, labelled=True)
        process = self.build_process(cfg, dataset)
        torch.manual_seed(cfg.train.seed)  # the same initial weights for the same config
        model = self.build_model(cfg, process, dataset)
        return {
            "model": model,
            "loss": self.build_loss(cfg, process, model),
            "dataset": dataset,
            "sample_fn": self.grid_sampler(cfg, dataset),
            "augment": random_hflip if cfg.data.hflip else None,
            # the schedule plot of the run folder: the process and one training image
            "schedule": (process, load_batch(dataset, [0])[0]),
        }

    # -------------------------------------------------------------------------- sampling
    def sample(self, cfg, model, n, *, seed, start, device, labels=None, progress=False):
        from nudiff.samplers import sample

        return sample(
            model,
            model.process,
            n,
            **sample_settings(cfg),
            labels=labels,
            seed=seed,
            start=start,
            device=device,
            progress=progress,
        )

    def grid_sampler(self, cfg, dataset):
        """The trainer's grids: the same seed every time, so grids are comparable; a
        class-conditional model samples the classes in turn, a conditional one is conditioned
        on the degraded first training images."""

        def sample_fn(model, n: int, generator: torch.Generator) -> torch.Tensor:
            device = next(model.parameters()).device
            if cfg.conditional is not None:
                from nudiff.data import load_batch
                from nudiff.run import sample_conditional

                x = load_batch(dataset, list(range(min(n, len(dataset))))).to(device)
                y = model.task.degrade(x, torch.arange(len(x)))
                out = sample_conditional(model, y, 1, **sample_settings(cfg), seed=cfg.train.seed)
                return out.images.clamp(-1, 1)
            k = cfg.model.num_classes
            labels = torch.arange(n) % k if k else None
            out = self.sample(
                cfg, model, n, seed=cfg.train.seed, start=0, device=device, labels=labels
            )
            return out.images.clamp(-1, 1)

        return sample_fn

    def likelihoods(self, model) -> dict:
        from nudiff.eval.elbo import elbo_log_likelihood
        from nudiff.eval.likelihood import ode_log_likelihood
        from nudiff.ndm.likelihood import NDM_METHODS  # the T-step bound of any transform

        return {
            "ode": ode_log_likelihood,
            "elbo": elbo_log_likelihood,
            "elbo-discrete": NDM_METHODS["elbo-discrete"],
        }


FAMILY = GaussianFamily()
