"""Neural Diffusion Models as a family: the linear process with a learned transform ``F(x, t)``
(or the identity, trained on the same bound), its bound as the loss, its samplers and
likelihoods."""

from __future__ import annotations

from nudiff.families import LINEAR_SAMPLERS
from nudiff.families.gaussian import GaussianFamily
from nudiff.ndm.config import NDMLossConfig

#: schedules with one alpha, sigma for all components (a learned transform needs g > 0)
SCALAR_SCHEDULES = ("vp-cosine", "vp-linear", "ve", "edm", "rectified-flow")


class NDMFamily(GaussianFamily):
    name = "ndm"
    key = "process.transform (NDM)"
    label = "NDM"
    selected_by = "process.transform (a Neural Diffusion Model)"
    description = "Neural Diffusion Models: a learned transform inside the linear process"
    sections = ("process.transform", "loss.ndm")
    features = frozenset(
        {"interval-steps", "time-grid", "basis", "data-prior", "dit", "mlp", "resolution"}
        | {"likelihood"}
    )

    def claims(self, cfg) -> bool:
        return cfg.process.transform is not None

    def samplers(self, cfg) -> tuple[str, ...]:
        """A learned transform samples with the NDM steps; the identity with every linear
        sampler (which it equals)."""
        from nudiff.ndm.sampler import NDM_SAMPLERS

        transform = cfg.process.transform
        if transform is not None and transform.type == "identity":
            return LINEAR_SAMPLERS
        return tuple(NDM_SAMPLERS)

    def check(self, cfg) -> None:
        schedule = cfg.process.schedule
        if cfg.process.transform.type == "learned" and schedule.type not in SCALAR_SCHEDULES:
            raise ValueError(
                f"process.transform: learned needs a schedule whose every component moves "
                f"at every t (g > 0): one of {', '.join(SCALAR_SCHEDULES)}, got {schedule.type}"
            )

    def build_model(self, cfg, process, dataset=None):
        """A :class:`~nudiff.ndm.NDM`: the linear denoiser and the ``process.transform`` (a
        learned one around its own backbone with one noise feature, ``t``)."""
        from nudiff.build import build_backbone, build_linear_denoiser
        from nudiff.ndm import NDM, IdentityTransform, LearnedTransform

        t = cfg.process.transform
        denoiser = build_linear_denoiser(cfg, process, dataset)
        if t.type == "identity":
            return NDM(denoiser, IdentityTransform())
        model = cfg.model.model_copy(update={"backbone": t.backbone or cfg.model.backbone})
        net = build_backbone(cfg.model_copy(update={"model": model}), process.shape[0], 1, t.width)
        return NDM(denoiser, LearnedTransform(process, net))

    def build_loss(self, cfg, process, model):
        from nudiff.ndm.loss import NDMLoss

        n = cfg.loss.ndm or NDMLossConfig()
        return NDMLoss(process, n.bound, n.steps, n.dequantize)

    def likelihoods(self, model) -> dict:
        return model.likelihood_methods


FAMILY = NDMFamily()
