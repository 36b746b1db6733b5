"""The YAML configuration: validated before any work, with one-line errors.

A config has the sections ``data``, ``process`` (basis, prior, schedule), ``model``, ``loss``,
``train`` and ``sample``, and the sections that a family or feature owns (``conditional``,
``distill``, ``process.beta``, ...), defined in that family's folder. :func:`load_config` reads
YAML, applies ``--set a.b=value`` overrides and validates: each section checks itself, then
:func:`nudiff.families.features.check_config` the combinations (which family, which features).
:func:`format_error` turns pydantic's report into one line per problem that names the key and
lists the valid choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nudiff.beta.config import BetaLossConfig, BetaProcessConfig
from nudiff.conditional.config import ConditionalConfig
from nudiff.config_files import config_path
from nudiff.data.config import DataConfig
from nudiff.distill.config import SiDConfig
from nudiff.models.config import ModelConfig
from nudiff.ndm.config import NDMLossConfig, TransformConfig
from nudiff.training.config import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------ basis
class BasisConfig(_Strict):
    """``type``: identity | haar | dct | fourier | pca. ``levels`` is for Haar only (null: as
    many as the resolution allows down to 4x4); ``pca_samples`` images fit the PCA basis."""

    type: Literal["identity", "haar", "dct", "fourier", "pca"] = "haar"
    levels: int | None = None
    pca_samples: int = 10_000


class PriorConfig(_Strict):
    """``white``: mean 0, scale 1. ``data``: per-component mean and std of ``fit_samples``
    training images in the basis (GUD's data-matched prior), saved with the model."""

    type: Literal["white", "data"] = "white"
    fit_samples: int = Field(5_000, ge=2)


# -------------------------------------------------------------------------------- schedules
class VPCosineConfig(_Strict):
    """The VP cosine schedule, optionally with simple diffusion's resolution shift:
    ``shift_resolution: d`` adds ``2 log(base_resolution / d)`` to the log-SNR (t = 0 and t = 1
    stay at the limits); ``interpolated: true`` interpolates the log-SNR linearly in t from the
    schedule shifted for ``base_resolution`` at t = 1 to the one shifted for ``interpolate_to``
    (null: ``d``, no shift) at t = 0."""

    type: Literal["vp-cosine"]
    log_snr_min: float = -15.0
    log_snr_max: float = 15.0
    shift_resolution: int | None = Field(None, ge=1)
    base_resolution: int = Field(64, ge=1)
    interpolated: bool = False
    interpolate_to: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _shift(self) -> VPCosineConfig:
        if self.interpolated and self.shift_resolution is None:
            raise ValueError("interpolated: true needs shift_resolution (the image resolution)")
        if self.interpolate_to is not None and not self.interpolated:
            raise ValueError("interpolate_to applies to interpolated: true only")
        end = self.interpolate_to or self.shift_resolution
        if self.interpolated and end < self.base_resolution:
            default = "" if self.interpolate_to is not None else " (null: shift_resolution)"
            raise ValueError(
                f"interpolated: true needs interpolate_to >= base_resolution="
                f"{self.base_resolution} (less noise towards t = 0), got {end}{default}"
            )
        return self

    def shifts(self) -> tuple[float, float | None]:
        """The log-SNR shifts of :class:`~nudiff.schedules.VPCosine`: ``(shift, shift_to)``."""
        from nudiff.schedules import resolution_shift

        d = self.shift_resolution
        if d is None:
            return 0.0, None
        shift = resolution_shift(d, self.base_resolution)
        if not self.interpolated:
            return shift, None
        return shift, resolution_shift(d, self.interpolate_to or d)


class VPLinearConfig(_Strict):
    type: Literal["vp-linear"]
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-4


class VEConfig(_Strict):
    type: Literal["ve"]
    sigma_min: float = 0.01
    sigma_max: float = 50.0


class EDMConfig(_Strict):
    type: Literal["edm"]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


class RectifiedFlowConfig(_Strict):
    type: Literal["rectified-flow"]
    t_min: float = 1e-4


class MultiSpeedConfig(_Strict):
    """MSDiff: band k (finest first) noised from ``log_snr_max`` at t = 0 to ``log_snr_min`` at
    ``finishing_times[k]`` (null: equally spaced, the coarsest at 1)."""

    type: Literal["multispeed"]
    finishing_times: list[float] | None = None
    log_snr_max: float = 10.0
    log_snr_min: float = -10.0


class SoftConditioningConfig(_Strict):
    """GUD soft-conditioning on the basis label ``label`` (null: the basis default)."""

    type: Literal["soft"]
    softness: float = 1.0
    g_denoise: float = -10.0
    g_noise: float = 10.0
    label: str | None = None
    clip: bool = False


class SequentialConfig(_Strict):
    """Hard sequential windows over the distinct values of ``label`` (e.g. ``col``)."""

    type: Literal["sequential"]
    label: str | None = None
    overlap: float = 0.0
    log_snr_max: float = 10.0
    log_snr_min: float = -10.0


class MSFConfig(_Strict):
    """MSF's two-stage factorisation on the haar basis: the residual (every detail band) is
    noised during ``[0, split]`` with the base (the approximation band: the image pooled by
    ``2^levels``) clean, then the base during ``[split, 1]``. ``levels``: the Haar levels (null:
    ``process.basis.levels``; set here, it sets them)."""

    type: Literal["msf"]
    levels: int | None = Field(None, ge=1)
    split: float = Field(0.5, gt=0, lt=1)
    log_snr_max: float = 10.0
    log_snr_min: float = -10.0


class BlurringConfig(_Strict):
    """Blurring diffusion (Hoogeboom & Salimans) on the dct basis: DCT component ``(k_h, k_w)``
    is scaled by the heat equation's ``exp(-pi^2 (k_h^2 / H^2 + k_w^2 / W^2) tau(t))`` (floored
    at ``min_scale``), a Gaussian blur of ``blur_sigma_max sin^2(pi t / 2)`` pixels, on top of
    a VP cosine noise schedule from ``log_snr_max`` to ``log_snr_min``."""

    type: Literal["blurring"]
    blur_sigma_max: float = Field(20.0, ge=0)
    min_scale: float = Field(0.001, gt=0, lt=1)
    log_snr_min: float = -10.0
    log_snr_max: float = 10.0


ScheduleConfig = Annotated[
    VPCosineConfig
    | VPLinearConfig
    | VEConfig
    | EDMConfig
    | RectifiedFlowConfig
    | MultiSpeedConfig
    | MSFConfig
    | SoftConditioningConfig
    | SequentialConfig
    | BlurringConfig,
    Field(discriminator="type"),
]


class ProcessConfig(_Strict):
    """``family``: ``gaussian`` (the linear process: ``basis``, ``prior``, ``schedule``) or
    ``beta`` (Beta diffusion: the ``beta`` section; pixels, no Gaussian schedule).
    ``transform``: a Neural Diffusion Model (:class:`TransformConfig`; null: none), trained on
    the NDM bound (``loss.ndm``)."""

    family: Literal["gaussian", "beta"] = "gaussian"
    basis: BasisConfig = BasisConfig()
    prior: PriorConfig = PriorConfig()
    schedule: ScheduleConfig = MultiSpeedConfig(type="multispeed")
    beta: BetaProcessConfig | None = None
    transform: TransformConfig | None = None


# ------------------------------------------------------------------------------------- loss
class SoftnessRange(_Strict):
    """A softness range for one model over several soft-conditioning schedules (``max`` may be
    ``.inf``: standard diffusion)."""

    min: float = Field(gt=0)
    max: float = Field(gt=0)


class LossConfig(_Strict):
    """``weighting`` of the squared x0 error per component: ``uniform`` (uniform in the
    prediction target's space), ``likelihood`` (g^2 / sigma^2 on the eps error: the ELBO),
    ``min-snr`` (min(SNR, min_snr_gamma)); ``band_weights`` multiplies per basis group.
    ``t_sampling``: uniform | stratified (over the global batch) | interval (``t_interval``) |
    log-normal (EDM's noise levels: the mean log-SNR over components ~ N(``log_snr_mean``,
    ``log_snr_std``^2), stratified; EDM's ``ln sigma ~ N(-1.2, 1.2^2)`` is the default 2.4, 2.4).
    ``softness``: ``{min, max}`` trains one model over that range of the soft-conditioning
    schedule's softness (one draw per batch, uniform in 1 / softness); sampling then takes any
    ``process.schedule.softness`` inside it."""

    weighting: Literal["uniform", "likelihood", "min-snr"] = "uniform"
    min_snr_gamma: float = Field(5.0, gt=0)
    band_weights: list[float] | None = None
    t_sampling: Literal["uniform", "stratified", "interval", "log-normal"] = "stratified"
    log_snr_mean: float = 2.4
    log_snr_std: float = Field(2.4, gt=0)
    softness: SoftnessRange | None = None
    t_interval: tuple[float, float] | None = None
    beta: BetaLossConfig | None = None
    ndm: NDMLossConfig | None = None

    @model_validator(mode="after")
    def _interval(self) -> LossConfig:
        if self.t_sampling == "interval":
            if self.t_interval is None:
                raise ValueError("loss.t_interval is required when loss.t_sampling is 'interval'")
            lo, hi = self.t_interval
            if not 0 <= lo < hi <= 1:
                raise ValueError(f"loss.t_interval must satisfy 0 <= a < b <= 1, got {lo}, {hi}")
        return self


class SkipConfig(_Strict):
    """Brick skipping for LEGO backbones: from the fraction ``from`` of the sampling steps on,
    run only the first bricks (``bricks: last`` drops the last brick; an integer ``k`` keeps the
    first ``k``). CLI: ``nudiff sample RUN --skip "bricks=last,from=0.5"``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    bricks: Literal["last"] | Annotated[int, Field(ge=1)] = "last"
    start: float = Field(0.5, ge=0.0, le=1.0, alias="from")


class SampleConfig(_Strict):
    """Defaults for sample grids during training and for ``nudiff sample``.

    ``sampler``: one of :data:`nudiff.samplers.SAMPLERS`; ``grid``: auto | uniform | log-snr |
    edm (see :mod:`nudiff.samplers.grids`) | optimized (fitted to the run's data moments for
    the sampler, :mod:`nudiff.samplers.optimized`); ``budgets``: steps per interval between the
    schedule's breakpoints (replaces ``steps``); ``options``: the sampler's own keywords (e.g.
    ``eta`` for ddim, ``rtol``/``atol`` for dopri5); ``guidance``: classifier-free guidance
    weight of class-conditional models (1: the conditional model), applied at times in
    ``guidance_interval`` (null: all); ``skip``: LEGO brick skipping
    (:class:`SkipConfig`)."""

    sampler: str = "dpmpp-2m-sde"
    steps: int = Field(20, ge=1)
    grid: Literal["auto", "uniform", "log-snr", "edm", "optimized"] = "auto"
    budgets: list[Annotated[int, Field(ge=1)]] | None = None
    options: dict[str, bool | int | float | str] = {}
    n: int = Field(64, ge=1)
    guidance: float = Field(1.0, ge=0.0)
    guidance_interval: tuple[float, float] | None = None
    skip: SkipConfig | None = None

    @model_validator(mode="after")
    def _sampler(self) -> SampleConfig:
        from nudiff.samplers import sampler_options

        g = self.guidance_interval
        if g is not None and not 0 <= g[0] < g[1] <= 1:
            raise ValueError(f"sample.guidance_interval must satisfy 0 <= lo < hi <= 1, got {g}")
        if self.sampler in ("beta", "onestep"):  # Beta diffusion's; a distilled generator's
            if self.options:
                raise ValueError(f"sample.sampler {self.sampler} takes no sample.options")
            return self
        allowed = sampler_options(self.sampler)  # raises for an unknown sampler
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"sample.options {unknown} unknown for sampler {self.sampler!r}; it takes "
                f"{sorted(allowed)}"
            )
        return self


class Config(_Strict):
    data: DataConfig = DataConfig()
    process: ProcessConfig = ProcessConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    conditional: ConditionalConfig | None = None
    distill: SiDConfig | None = None

    @model_validator(mode="after")
    def _combinations(self) -> Config:
        from nudiff.families.features import check_backbone, check_config

        basis, res = self.process.basis, self.data.resolution
        if self.process.schedule.type == "msf":
            self._check_msf()
        if self.process.schedule.type == "blurring" and basis.type != "dct":
            raise ValueError(
                "process.schedule.type: blurring needs process.basis.type: dct (its "
                f"frequencies), got {basis.type}"
            )
        if basis.levels is not None and basis.type != "haar":
            raise ValueError(
                f"process.basis.levels applies to the haar basis only, not {basis.type!r}"
            )
        levels = self.haar_levels() if basis.type == "haar" else 0
        _, height, width = self.data.image_shape
        square = width == height
        where = "data.resolution" if square else "data.resolution and data.width"
        size = f"{res}" if square else f"{height}x{width}"
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"process.basis.levels={levels} needs {where} divisible by {2**levels}, got {size}"
            )
        check_config(self)
        if self.model.multiscale is None:
            check_backbone(self, res, where, width=width)
        return self

    def _check_msf(self) -> None:
        basis, schedule = self.process.basis, self.process.schedule
        if basis.type != "haar":
            raise ValueError(f"process.schedule.type: msf needs the haar basis, got {basis.type}")
        if None not in (schedule.levels, basis.levels) and basis.levels != schedule.levels:
            raise ValueError(
                f"process.schedule.levels={schedule.levels} differs from "
                f"process.basis.levels={basis.levels}"
            )

    def haar_levels(self) -> int:
        """The Haar basis's levels: ``process.basis.levels``, else an MSF schedule's
        ``levels``, else the default for the resolution."""
        from nudiff.bases.haar import default_haar_levels

        levels = self.process.basis.levels
        if levels is None and self.process.schedule.type == "msf":
            levels = self.process.schedule.levels
        return levels if levels is not None else default_haar_levels(self.data.resolution)

    def scale_levels(self) -> list[int]:
        """A multi-scale model's dropped Haar levels per scale, finest first (the config-level
        twin of :func:`nudiff.models.multiscale.stages`)."""
        levels = self.haar_levels()
        if self.process.schedule.type == "msf":
            return [0, levels]
        return list(range(levels + 1))


# ------------------------------------------------------------------------------- load/save
def set_key(tree: dict, dotted: str, value: Any) -> None:
    """``set_key(d, "a.b", v)``: ``d["a"]["b"] = v``, creating sections as needed."""
    *path, last = dotted.split(".")
    node = tree
    for key in path:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {key!r} is not a section")
    node[last] = value


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[("a.b", 1), ("c", [1, 2])]`` (values parsed as YAML)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        out.append((key.strip(), parse_yaml(raw, f"--set {item}")))
    return out


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``; malformed YAML is a one-line :class:`ConfigError` naming
    ``source`` (a file or an option) with the line and column of the problem."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        raise ConfigError(
            f"{where}: malformed YAML: {problem}" + (f" ({context})" if context else "")
        ) from None


def format_error(err: ValidationError, model: type[BaseModel] = Config) -> str:
    """One line per problem: ``section.key: message (valid: ...)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _is_union_tag(p))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, e["loc"][:-1])
            msg = "unknown key" + (f" (valid: {', '.join(valid)})" if valid else "")
        elif e["type"] == "literal_error" or e["type"] == "union_tag_invalid":
            msg = msg.replace("Input should be", "must be")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def _is_union_tag(part) -> bool:
    return isinstance(part, str) and part in _SCHEDULE_TYPES


def _valid_keys(model: type[BaseModel], loc) -> list[str]:
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif part in _SCHEDULE_TYPES:
            node = _SCHEDULE_TYPES[part]
        else:
            return []
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(node.model_fields)
    return []


_SCHEDULE_TYPES: dict[str, type[BaseModel]] = {
    c.model_fields["type"].annotation.__args__[0]: c
    for c in (
        VPCosineConfig,
        VPLinearConfig,
        VEConfig,
        EDMConfig,
        RectifiedFlowConfig,
        MultiSpeedConfig,
        MSFConfig,
        SoftConditioningConfig,
        SequentialConfig,
        BlurringConfig,
    )
}


class ConfigError(ValueError):
    """A config that failed validation; the message has one line per problem."""


def validate(tree: dict) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_error(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (a file, or the name of a packaged config such as ``quickstart``; None: the
    defaults), apply ``--set`` overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = config_path(path)
        tree = parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for key, value in parse_overrides(overrides):
        set_key(tree, key, value)
    return validate(tree)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)
