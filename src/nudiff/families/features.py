"""The capability table: the shared features, when each is active, and the one check that
decides what composes.

A feature is something a config (or a command) can ask of any family: patch training, class
labels, a multi-scale model, ... Each says when it is active in a config and, for the families
that support it, its own rules (:meth:`Feature.check`). :func:`check_config` refuses every
active feature that the config's family does not support with the same one-line error,
``<family key> does not support <feature key>``: nothing is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nudiff.families import FAMILIES, family_of, get_family

if TYPE_CHECKING:
    from nudiff.config import Config
    from nudiff.families.base import Family


@dataclass(frozen=True)
class Feature:
    """``name``: its id in the families' ``features``; ``key``: the config key (or command) that
    asks for it, as errors name it (a function of the config when it depends on the value);
    ``active``: whether a config asks for it (None: asked for by a command, see
    :func:`require`); ``check``: its own rules when supported (a ``ValueError``)."""

    name: str
    key: str | Callable[[Config], str]
    description: str
    active: Callable[[Config], bool] | None = None
    check: Callable[[Config], None] | None = None

    def key_for(self, cfg: Config) -> str:
        return self.key(cfg) if callable(self.key) else self.key


def _check_patch(cfg: Config) -> None:
    patch, basis, res = cfg.train.patch, cfg.process.basis, cfg.data.resolution
    if basis.type not in ("identity", "haar"):
        raise ValueError(
            "train.patch needs a basis whose components are local: identity or haar; "
            f"{basis.type} components are global (a crop of the image is not a crop of them)"
        )
    if cfg.model.multiscale is not None:
        raise ValueError(
            "train.patch does not support model.multiscale (its scales run on pooled "
            "images; crops of every scale are not implemented)"
        )
    if cfg.conditional is not None:
        raise ValueError("train.patch does not support conditional models")
    m = cfg.model
    if m.backbone in ("unet", "dit") and getattr(m, m.backbone).coord_channels != 2:
        raise ValueError(
            f"train.patch needs coordinate channels: set model.{m.backbone}.coord_channels: 2"
        )
    align = 2 ** cfg.haar_levels() if basis.type == "haar" else 1
    for p in patch.sizes:
        if p > res:
            raise ValueError(f"train.patch.sizes: {p} exceeds data.resolution={res}")
        if p % align:
            raise ValueError(
                f"train.patch.sizes: {p} must be a multiple of 2^levels = {align} on the haar "
                "basis (crops of the image are then crops of every band)"
            )
        check_backbone(cfg, p, f"the patch size {p} (train.patch.sizes)")


def _check_guidance(cfg: Config) -> None:
    if cfg.model.num_classes is None:
        raise ValueError(
            "sample.guidance needs a class-conditional model (model.num_classes), and so does "
            "sample.guidance_interval"
        )


def _check_softness(cfg: Config) -> None:
    lo, hi = cfg.loss.softness.min, cfg.loss.softness.max
    schedule = cfg.process.schedule
    if schedule.type != "soft":
        raise ValueError(f"loss.softness needs process.schedule.type: soft, got {schedule.type}")
    if lo > hi:
        raise ValueError(f"loss.softness needs min <= max, got {lo} and {hi}")
    if not lo <= schedule.softness <= hi:
        raise ValueError(
            f"process.schedule.softness={schedule.softness} lies outside the range the "
            f"model is trained on, loss.softness [{lo}, {hi}]"
        )
    if cfg.model.noise_conditioning != "log_snr_groups" or cfg.model.multiscale:
        raise ValueError(
            "loss.softness needs model.noise_conditioning: log_snr_groups (the network "
            "tells softnesses apart by the group log-SNRs) and no model.multiscale"
        )


def _check_skip(cfg: Config) -> None:
    if cfg.model.backbone != "lego" or cfg.model.multiscale is not None:
        raise ValueError("sample.skip needs model.backbone: lego (without multiscale)")
    if cfg.sample.sampler == "dopri5":
        raise ValueError("sample.skip needs a fixed-step sampler, not dopri5")


def _check_conditional(cfg: Config) -> None:
    from nudiff.conditional.tasks import build_task

    c, m = cfg.conditional, cfg.model
    if cfg.data.width not in (None, cfg.data.resolution):
        raise ValueError("conditional models take square images (data.width: null)")
    build_task(c.task, coverage=c.coverage).check(cfg.data.image_shape)
    if m.backbone == "lego":
        raise ValueError("conditional models take model.backbone unet or dit, not lego")
    if m.num_classes is not None:
        raise ValueError("conditional models do not take model.num_classes")
    if m.noise_conditioning != "log_snr_groups":
        raise ValueError("conditional models take model.noise_conditioning: log_snr_groups")
    # the joint estimators are EDM-preconditioned with EDM's loss weight, whatever these say
    if m.prediction != "edm":
        raise ValueError(f"conditional models take model.prediction: edm, got {m.prediction}")
    if cfg.loss.weighting != "uniform":
        raise ValueError(
            "conditional models weight their loss as EDM does: loss.weighting must be uniform, "
            f"got {cfg.loss.weighting}"
        )
    per_component = ("multispeed", "msf", "soft", "sequential", "blurring")
    if c.estimator == "cdiffe" and cfg.process.schedule.type in per_component:
        raise ValueError("conditional.estimator cdiffe needs a scalar process.schedule")


def _check_multiscale(cfg: Config) -> None:
    from nudiff.models.config import check_multiscale

    if cfg.data.width not in (None, cfg.data.resolution):
        raise ValueError("model.multiscale takes square images (data.width: null)")
    check_multiscale(cfg)


def check_backbone(
    cfg: Config, res: int, where: str = "data.resolution", m=None, width: int | None = None
) -> None:
    """Raise unless the backbone of ``m`` (default ``cfg.model``) runs on ``res`` x ``width``
    images (``width`` None: square)."""
    from nudiff.models.config import check_backbone as check

    check(m or cfg.model, res, where, width)


def _basis_key(cfg: Config) -> str:
    return f"process.basis.type: {cfg.process.basis.type}"


FEATURES: tuple[Feature, ...] = (
    Feature(
        "patch",
        "train.patch",
        "Patch Diffusion: training on random crops with coordinate channels",
        lambda c: c.train.patch is not None,
        _check_patch,
    ),
    Feature(
        "class-labels",
        "model.num_classes",
        "class-conditional models (labels from the data, label dropout)",
        lambda c: c.model.num_classes is not None,
    ),
    Feature(
        "guidance",
        "sample.guidance",
        "classifier-free guidance (a weight other than 1, or a guidance interval)",
        lambda c: c.sample.guidance != 1 or c.sample.guidance_interval is not None,
        _check_guidance,
    ),
    Feature(
        "softness-range",
        "loss.softness",
        "GUD: one model over a range of soft-conditioning softness",
        lambda c: c.loss.softness is not None,
        _check_softness,
    ),
    Feature(
        "multiscale",
        "model.multiscale",
        "MSDiff / MSF: one network per scale or stage, sampled coarse to fine",
        lambda c: c.model.multiscale is not None,
        _check_multiscale,
    ),
    Feature(
        "brick-skipping",
        "sample.skip",
        "LEGO: sampling the last steps with the first bricks only",
        lambda c: c.sample.skip is not None,
        _check_skip,
    ),
    Feature(
        "log-normal-times",
        "loss.t_sampling: log-normal",
        "EDM's log-normal training times",
        lambda c: c.loss.t_sampling == "log-normal",
    ),
    Feature(
        "conditional",
        "conditional",
        "conditional tasks (super-resolution, inpainting, colorization): CDE, CMDE, ...",
        lambda c: c.conditional is not None,
        _check_conditional,
    ),
    Feature(
        "interval-steps",
        "sample.budgets",
        "sampler steps per interval between the schedule's breakpoints",
        lambda c: c.sample.budgets is not None,
    ),
    Feature(
        "optimized-grid",
        "sample.grid: optimized",
        "a time grid optimised for the sampler on the run's Gaussian surrogate of its data",
        lambda c: c.sample.grid == "optimized",
    ),
    Feature(
        "time-grid",
        "sample.grid",
        "a sampler time grid other than the schedule's own (auto)",
        lambda c: c.sample.grid != "auto",
    ),
    Feature(
        "basis",
        _basis_key,
        "a basis other than pixels (haar, dct, fourier, pca)",
        lambda c: c.process.basis.type != "identity",
    ),
    Feature(
        "data-prior",
        "process.prior.type: data",
        "a prior fitted to the data (GUD)",
        lambda c: c.process.prior.type == "data",
    ),
    Feature(
        "dit",
        "model.backbone: dit",
        "the DiT backbone",
        lambda c: c.model.backbone == "dit",
    ),
    Feature(
        "lego",
        "model.backbone: lego",
        "the LEGO-bricks backbone",
        lambda c: c.model.backbone == "lego",
    ),
    Feature(
        "mlp",
        "model.backbone: mlp",
        "the MLP backbone (tiny data)",
        lambda c: c.model.backbone == "mlp",
    ),
    Feature("resolution", "--resolution", "sampling at another size than trained"),
    Feature("likelihood", "nudiff eval nll", "likelihoods in bits/dim"),
    Feature("teacher", "nudiff distill sid", "being the teacher of a SiD distillation"),
)
FEATURE_NAMES = {f.name: f for f in FEATURES}


def refuse(family: Family, key: str) -> ValueError:
    """The one error of an unsupported pair."""
    return ValueError(f"{family.key} does not support {key}")


def check_config(cfg: Config) -> None:
    """Every cross-section rule of a config: the sections of other families, the active
    features its family does not support, its sampler, the family's own rules, then the rules
    of each supported active feature."""
    family = family_of(cfg)
    for name in FAMILIES:
        other = get_family(name)
        for section in () if other is family else other.sections:
            if _get(cfg, section) is None or section in family.sections:
                continue
            if other.claims(cfg):  # asked for, but this family comes first
                raise refuse(family, other.selected_by)
            raise ValueError(f"{section} needs {other.selected_by}")
    for feature in FEATURES:
        if feature.active is not None and feature.active(cfg):
            if feature.name not in family.features:
                raise refuse(family, feature.key_for(cfg))
    _check_sampler(cfg, family)
    family.check(cfg)
    for feature in FEATURES:
        if feature.check is not None and feature.active(cfg):
            feature.check(cfg)


def _check_sampler(cfg: Config, family: Family) -> None:
    samplers, name = family.samplers(cfg), cfg.sample.sampler
    if name in samplers:
        return
    owners = [f for f in map(get_family, FAMILIES) if f is not family and name in f.samplers(cfg)]
    if owners and owners[0].name != "gaussian":  # a sampler of one family only
        raise ValueError(f"sample.sampler {name} needs {owners[0].selected_by}")
    other = f"the {owners[0].label} sampler " if owners else ""
    choices = " | ".join(samplers)
    raise ValueError(f"{family.key} samples with sample.sampler: {choices}, not {other}{name!r}")


def require(cfg: Config, name: str) -> None:
    """Refuse a command's feature (``resolution``, ``likelihood``, ``teacher``) that the
    config's family does not support."""
    family = family_of(cfg)
    if name not in family.features:
        raise refuse(family, FEATURE_NAMES[name].key_for(cfg))


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def families_table() -> str:
    """The registered families as Markdown: what selects each, its samplers, what it is."""
    from types import SimpleNamespace

    # the samplers of a learned NDM transform (the identity samples with the Gaussian ones)
    learned = SimpleNamespace(process=SimpleNamespace(transform=SimpleNamespace(type="learned")))
    rows = ["| family | selected by | samplers | what it is |", "|---|---|---|---|"]
    for name in FAMILIES:
        f = get_family(name)
        samplers = ", ".join(f"`{s}`" for s in f.samplers(learned))
        rows.append(f"| `{name}` | `{f.selected_by}` | {samplers} | {f.description} |")
    return "\n".join(rows) + "\n"


def capability_table() -> str:
    """The table as Markdown: one row per feature, one column per family (``docs`` print it)."""
    families = [get_family(name) for name in FAMILIES]
    head = "| feature | asked for by | " + " | ".join(f"`{f.name}`" for f in families) + " |"
    rows = [head, "|---|---|" + "---|" * len(families)]
    for feature in FEATURES:
        key = feature.key if isinstance(feature.key, str) else "process.basis.type (not identity)"
        marks = " | ".join("yes" if feature.name in f.features else "no" for f in families)
        rows.append(f"| {feature.description} | `{key}` | {marks} |")
    return "\n".join(rows) + "\n"
