"""A SiD-distilled one- or few-step generator as a family: its run is the teacher's config plus
a ``distill`` section; it trains data-free (generator and fake score, two phases) and samples
with ``onestep`` (the generator's steps). The teacher's own builders give the networks'
architecture."""

from __future__ import annotations

import torch

from nudiff.families.gaussian import GaussianFamily


class SiDFamily(GaussianFamily):
    name = "sid"
    key = "distill (SiD)"
    label = "one-step"
    selected_by = "a distilled run (distill: ...)"
    description = "SiD: a teacher distilled data-free into a one- or few-step generator"
    sections = ("distill",)
    # the teacher's own features it distils; what a one-step generator cannot do is refused
    features = frozenset(
        {"class-labels", "multiscale", "log-normal-times", "softness-range", "basis"}
        | {"data-prior", "dit", "lego", "mlp"}
    )

    def claims(self, cfg) -> bool:
        return cfg.distill is not None

    def samplers(self, cfg) -> tuple[str, ...]:
        return ("onestep",)

    def check(self, cfg) -> None:
        # teachers of another family (Beta, NDM) are refused by their sections: SiD distils
        # the linear process
        d = cfg.distill
        if d.sigma_min >= d.sigma_max:
            raise ValueError("distill.sigma_min must be below distill.sigma_max")
        guided = {
            "distill.guidance": d.guidance,
            "distill.guidance_fake": d.guidance_fake,
            "distill.guidance_fake_eval": d.guidance_fake_eval,
        }
        guided = [key for key, w in guided.items() if w is not None and w != 1]
        if guided and cfg.model.num_classes is None:
            raise ValueError(
                f"{', '.join(guided)}: classifier-free guidance needs a class-conditional "
                "teacher (model.num_classes); leave the guidance scales at 1"
            )

    def training_parts(self, cfg) -> dict:
        from nudiff.distill.run import build_sid

        torch.manual_seed(cfg.train.seed)
        model, loss = build_sid(cfg)
        k = cfg.model.num_classes

        def sample_fn(m, n: int, generator: torch.Generator) -> torch.Tensor:
            device = next(m.parameters()).device
            labels = torch.arange(n) % k if k else None
            out = self.sample(
                cfg, m.generator, n, seed=cfg.train.seed, start=0, device=device, labels=labels
            )
            return out.images.clamp(-1, 1)

        return {"model": model, "loss": loss, "dataset": None, "sample_fn": sample_fn}

    def load(self, cfg, state: dict, device):
        """The run's EMA or raw generator (the teacher's architecture, the run's weights)."""
        from nudiff.distill.run import load_generator

        teacher = self.build_model(cfg, self.build_process(cfg))
        return load_generator(cfg, teacher, state).to(device).eval()

    def default_labels(self, cfg, n: int):
        """A class-conditional generator draws the classes in turn when given no labels."""
        k = cfg.model.num_classes
        return torch.arange(n) % k if k else None

    def sample(self, cfg, model, n, *, seed, start, device, labels=None, progress=False):
        """``cfg.sample.steps`` generator calls: the generator's first steps, then untrained
        refinements beyond its ``distill.steps`` (see
        :func:`~nudiff.distill.sid.sample_one_step`)."""
        from nudiff.distill.sid import sample_one_step
        from nudiff.schedules.reference import ReferenceTime

        steps = cfg.sample.steps
        ref = ReferenceTime(model.process).to(device) if steps > model.steps else None
        return sample_one_step(
            model,
            n,
            steps=steps,
            seed=seed,
            start=start,
            labels=labels,
            device=device,
            reference=ref,
        )

    def likelihoods(self, model) -> dict:
        return {}  # a one-step generator has no density


FAMILY = SiDFamily()
