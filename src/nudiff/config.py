"""The YAML configuration: validated before any work, with one-line errors.

A config has the sections ``data``, ``process`` (basis, prior, schedule), ``model``, ``loss``,
``train`` and ``sample``. :func:`load_config` reads YAML, applies ``--set a.b=value``
overrides and validates; :func:`format_error` turns pydantic's report into one line per
problem that names the key and lists the valid choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nudiff.config_files import config_path
from nudiff.data.config import DataConfig
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
    type: Literal["vp-cosine"]
    log_snr_min: float = -15.0
    log_snr_max: float = 15.0


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


ScheduleConfig = Annotated[
    VPCosineConfig
    | VPLinearConfig
    | VEConfig
    | EDMConfig
    | RectifiedFlowConfig
    | MultiSpeedConfig
    | MSFConfig
    | SoftConditioningConfig
    | SequentialConfig,
    Field(discriminator="type"),
]


class BetaProcessConfig(_Strict):
    """Beta diffusion's process (:class:`nudiff.beta.process.BetaProcess`): data mapped to
    ``x0 = shift + scale (x + 1) / 2`` inside (0, 1), concentration ``eta``, ``logit alpha_t``
    from ``logit_alpha_max`` at t = 0 to ``logit_alpha_min`` at t = 1 (as ``t^power``)."""

    eta: float = Field(10_000.0, gt=0)
    scale: float = Field(0.39, gt=0, lt=1)
    shift: float = Field(0.60, gt=0, lt=1)
    logit_alpha_max: float = 10.0
    logit_alpha_min: float = -13.0
    power: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> BetaProcessConfig:
        if self.shift + self.scale >= 1:
            raise ValueError(
                f"needs shift + scale < 1 (x0 inside (0, 1)), got {self.shift} + {self.scale}"
            )
        if self.logit_alpha_min >= self.logit_alpha_max:
            raise ValueError("needs logit_alpha_min < logit_alpha_max")
        return self


class TransformConfig(_Strict):
    """A Neural Diffusion Model's transform (:mod:`nudiff.ndm`): ``z_t = alpha(t) F(u, t) +
    sigma(t) eps`` per whitened component. ``identity``: ``F = u`` (the linear process, trained
    on the same NDM bound: the fixed-transform baseline); ``learned``: ``F(u, t) = u + t N(u,
    t)`` with ``N`` a ``backbone`` network (null: ``model.backbone``; unet, dit or mlp,
    configured by its ``model`` section) of base width ``width`` (null: that section's),
    conditioned on ``t``."""

    type: Literal["identity", "learned"] = "learned"
    backbone: Literal["unet", "dit", "mlp"] | None = None
    width: int | None = Field(None, ge=1)


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


# ------------------------------------------------------------------------------------ model
class UNetConfig(_Strict):
    channels: int = Field(32, ge=1)
    channel_mult: list[int] = [1, 2, 2]
    num_res_blocks: int = Field(1, ge=1)
    attn_levels: list[int] = [2]
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    head_channels: int = Field(32, ge=1)
    coord_channels: Literal[0, 2] = Field(
        0, description="2: append each pixel's position on the canvas (patch training)"
    )


class DiTConfig(_Strict):
    """A diffusion transformer (Peebles & Xie): ``patch_size`` x ``patch_size`` patches as
    tokens with 2-D sin-cos positions for the input's size, ``depth`` adaLN-Zero blocks of
    ``width`` channels and ``heads`` heads."""

    patch_size: int = Field(2, ge=1)
    width: int = Field(128, ge=1)
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    coord_channels: Literal[0, 2] = Field(
        0, description="2: append each pixel's position on the canvas (patch training)"
    )


class LegoConfig(_Strict):
    """LEGO bricks (Zheng et al.): each brick is a small DiT run with shared weights on every
    ``region`` x ``region`` block of the image (0: the whole image), fed the noisy image, two
    coordinate channels and the previous brick's output. ``stacking``: ``pg`` (small regions
    first), ``pr`` (large first) or ``u`` (large, small, large), built for the data resolution
    from ``width``, ``depth`` (one for all bricks, or one per brick: upstream LEGO's PG grows
    them, e.g. 6, 8, 12) and ``patch``; ``bricks``: an explicit list of ``[region, patch, depth,
    width]`` that replaces the stacking. ``joint_loss``: every brick's output is trained as a
    denoiser of its own (what lets sampling skip the last bricks)."""

    stacking: Literal["pg", "pr", "u"] = "pg"
    bricks: list[tuple[int, int, int, int]] | None = None
    width: int = Field(64, ge=1)
    depth: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]] = 2
    patch: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    joint_loss: bool = True


class MLPConfig(_Strict):
    """A residual MLP on the flattened data (:class:`nudiff.models.mlp.MLP`), for tiny data
    such as the ``(1, 1, 1)`` toys."""

    width: int = Field(128, ge=1)
    depth: int = Field(3, ge=1)


class StageConfig(_Strict):
    """One scale's own network in a multi-scale model: ``backbone`` (null: ``model.backbone``)
    and keys of its section that replace ``model.unet`` / ``model.dit`` / ``model.lego``'s."""

    backbone: Literal["unet", "dit", "lego"] | None = None
    unet: dict[str, Any] | None = None
    dit: dict[str, Any] | None = None
    lego: dict[str, Any] | None = None


class MultiScaleConfig(_Strict):
    """A multi-scale model (the haar basis with the multispeed or msf schedule): one network
    per scale, i.e. per stage between band-window ends, run on the image pooled ``2^d`` times
    while the ``d`` finest bands are pure noise (multispeed: scale ``s`` drops ``s`` levels;
    msf: the residual at full resolution, then the base at ``2^-L``). ``share``: one network
    for all scales instead of one per scale; ``channels``: base width of each scale's network,
    finest first (null: the backbone's); ``stages``: each scale's own backbone and section
    overrides (:class:`StageConfig`, finest first; e.g. a light residual network). Training
    trains one scale per step, ``round-robin`` or ``random`` with probabilities
    ``scale_weights`` (finest first; null: equal). Sampling splits ``sample.steps`` equally
    over the scales unless ``sample.budgets`` (coarsest first) is set."""

    share: bool = False
    channels: list[Annotated[int, Field(ge=1)]] | None = None
    stages: list[StageConfig] | None = None
    scale_sampling: Literal["round-robin", "random"] = "round-robin"
    scale_weights: list[Annotated[float, Field(ge=0)]] | None = None


class ModelConfig(_Strict):
    """``prediction``: what the backbone's output means (``edm`` is EDM's preconditioned
    target with skip connection). ``sigma_data``: the std of the whitened clean components
    assumed by the preconditioning: ``data`` measures the mean per component and the std per
    basis group on ``stats_samples`` training images (saved with the model), a number is one
    std for all. ``multiscale``: see :class:`MultiScaleConfig` (null: one network for the whole
    process). ``backbone``: the network, ``unet``, ``dit`` or ``lego``, configured by the section
    of that name. ``num_classes``: a class-conditional model (labels from the data: shapes, or
    an npz with ``y_train``), its label hidden on a ``label_dropout`` share of each batch so the
    same network is the unconditional model of classifier-free guidance.
    ``noise_conditioning``: what the backbone is told about the noise, ``log_snr_groups`` (t and
    the mean log-SNR of every basis group: needed when one network serves several schedules)
    or ``t`` (the scalar time alone)."""

    prediction: Literal["edm", "eps", "x0", "v"] = "edm"
    sigma_data: Literal["data"] | Annotated[float, Field(gt=0)] = "data"
    stats_samples: int = Field(2_000, ge=2)
    backbone: Literal["unet", "dit", "lego", "mlp"] = "unet"
    num_classes: Annotated[int, Field(ge=1)] | None = None
    label_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    noise_conditioning: Literal["log_snr_groups", "t"] = "log_snr_groups"
    unet: UNetConfig = UNetConfig()
    dit: DiTConfig = DiTConfig()
    lego: LegoConfig = LegoConfig()
    mlp: MLPConfig = MLPConfig()
    multiscale: MultiScaleConfig | None = None


# ------------------------------------------------------------------------------------- loss
class SoftnessRange(_Strict):
    """A softness range for one model over several soft-conditioning schedules (``max`` may be
    ``.inf``: standard diffusion)."""

    min: float = Field(gt=0)
    max: float = Field(gt=0)


class BetaLossConfig(_Strict):
    """Beta diffusion's objective: ``type`` ``klub`` (KL upper bounds) or ``elbo`` (the same
    KLs with swapped arguments), ``w_cond`` x the conditional KL at ``s = s_ratio t`` plus
    ``w_marg`` x the marginal KL, ``t`` uniform in ``[t_min, 1]``."""

    type: Literal["klub", "elbo"] = "klub"
    w_cond: float = Field(0.99, ge=0)
    w_marg: float = Field(0.01, ge=0)
    s_ratio: float = Field(0.95, gt=0, lt=1)
    t_min: float = Field(1e-5, ge=0, lt=1)


class NDMLossConfig(_Strict):
    """The NDM objective (with ``process.transform``): ``bound`` ``continuous`` (``t`` drawn
    in the importance density of the ELBO evaluator, dF/dt by JVP) or ``discrete`` (the
    ``steps``-step bound). ``dequantize``: train on 8-bit images dequantised uniformly as the
    likelihood evaluation sees them (``(k + U) / 128 - 1``), not on the levels themselves."""

    bound: Literal["continuous", "discrete"] = "continuous"
    steps: int = Field(1000, ge=1)
    dequantize: bool = False


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
    edm (see :mod:`nudiff.samplers.grids`); ``budgets``: steps per interval between the
    schedule's breakpoints (replaces ``steps``); ``options``: the sampler's own keywords (e.g.
    ``eta`` for ddim, ``rtol``/``atol`` for dopri5); ``guidance``: classifier-free guidance
    weight of class-conditional models (1: the conditional model), applied at times in
    ``guidance_interval`` (null: all); ``skip``: LEGO brick skipping
    (:class:`SkipConfig`)."""

    sampler: str = "dpmpp-2m-sde"
    steps: int = Field(20, ge=1)
    grid: Literal["auto", "uniform", "log-snr", "edm"] = "auto"
    budgets: list[Annotated[int, Field(ge=1)]] | None = None
    options: dict[str, float] = {}
    n: int = Field(64, ge=1)
    guidance: float = Field(1.0, ge=0.0)
    guidance_interval: tuple[float, float] | None = None
    skip: SkipConfig | None = None

    @model_validator(mode="after")
    def _sampler(self) -> SampleConfig:
        from nudiff.samplers import sampler_options

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


class ConditionalConfig(_Strict):
    """Conditional generation (see :mod:`nudiff.conditional`): ``task`` builds ``y`` from each
    training image on the fly (``coverage``: missing fraction for inpainting); ``estimator``:
    ``cde`` (y clean), ``cdiffe`` (y diffuses with x), ``cmde`` (y slower, down to log-SNR
    ``y_log_snr_min`` at t = 1), ``vs-cmde`` (cmde with y's speed annealed from x's over
    ``anneal_steps`` training steps)."""

    task: Literal["sr2", "sr4", "inpaint-center", "inpaint-boxes", "colorization"] = "sr2"
    estimator: Literal["cde", "cdiffe", "cmde", "vs-cmde"] = "cde"
    coverage: float = Field(0.25, gt=0, lt=1)
    y_log_snr_min: float = -1.0
    anneal_steps: int = Field(0, ge=0)


class SiDConfig(_Strict):
    """SiD distillation of a teacher run into a one-step generator (:mod:`nudiff.distill.sid`);
    written by ``nudiff distill sid``. ``teacher``: the teacher's checkpoint folder.
    ``init_log_snr``: the generator's input level as a mean log-SNR (SiD's sigma_init = 2.5:
    ``-2 log 2.5``); ``alpha``, ``scale``: the generator loss's; ``t_max``, ``sigma_min``,
    ``sigma_max``, ``rho``: its noise levels (SiD's rho-7 scale); ``guidance``: classifier-free
    guidance of a class-conditional teacher in the generator loss."""

    method: Literal["sid"] = "sid"
    teacher: str
    alpha: float = Field(1.2, gt=0)
    scale: float = Field(100.0, gt=0)
    init_log_snr: float = -1.8325814637483102  # -2 log 2.5
    t_max: float = Field(0.8, gt=0, le=1)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0)
    guidance: float = Field(1.0, ge=0)


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
        res = self.data.resolution
        self._check_distill()
        if self.process.family == "beta":
            return self._check_beta()
        if self.sample.sampler == "beta":
            raise ValueError(
                "sample.sampler beta needs process.family: beta; a Gaussian process takes "
                "one of the Gaussian samplers"
            )
        if self.process.beta is not None or self.loss.beta is not None:
            raise ValueError("process.beta and loss.beta need process.family: beta")
        if self.process.transform is not None:
            self._check_ndm()
            if self.loss.t_sampling == "log-normal":
                raise ValueError(
                    "loss.t_sampling: log-normal does not apply to a Neural Diffusion Model, "
                    "whose bound draws t in its own importance density"
                )
        elif self.loss.ndm is not None:
            raise ValueError("loss.ndm needs process.transform (a Neural Diffusion Model)")
        if self.conditional is not None:
            self._check_conditional()
        self._check_guidance()
        basis = self.process.basis
        if self.process.schedule.type == "msf":
            self._check_msf()
        if self.loss.softness is not None:
            self._check_softness()
        if basis.levels is not None and basis.type != "haar":
            raise ValueError(
                f"process.basis.levels applies to the haar basis only, not {basis.type!r}"
            )
        if basis.type == "haar" and basis.levels is not None and res % 2**basis.levels:
            raise ValueError(
                f"process.basis.levels={basis.levels} needs data.resolution divisible by "
                f"{2**basis.levels}, got {res}"
            )
        if self.model.multiscale is not None:
            self._check_multiscale()
        else:
            self._check_backbone(res)
        if self.train.patch is not None:
            self._check_patch()
        if self.sample.skip is not None:
            if self.model.backbone != "lego" or self.model.multiscale is not None:
                raise ValueError("sample.skip needs model.backbone: lego (without multiscale)")
            if self.sample.sampler == "dopri5":
                raise ValueError("sample.skip needs a fixed-step sampler, not dopri5")
        return self

    def _check_distill(self) -> None:
        """A distilled run samples with its generator (``onestep``), and only Gaussian
        teachers without a conditioning input distil data-free."""
        if self.distill is None:
            if self.sample.sampler == "onestep":
                raise ValueError("sample.sampler onestep needs a distilled run (distill: ...)")
            return
        if self.process.family != "gaussian":
            raise ValueError("distill: SiD distils Gaussian-process teachers (process.family)")
        if self.conditional is not None:
            raise ValueError(
                "distill: a conditional-task teacher needs data for its condition; SiD here is "
                "data-free (class-conditional teachers are supported)"
            )
        if self.process.transform is not None:
            raise ValueError(
                "distill: SiD needs a linear process; a Neural Diffusion Model "
                "(process.transform) is not supported"
            )
        if self.sample.sampler != "onestep":
            raise ValueError(
                f"a distilled run samples with sample.sampler: onestep, not {self.sample.sampler!r}"
            )
        if self.distill.sigma_min >= self.distill.sigma_max:
            raise ValueError("distill.sigma_min must be below distill.sigma_max")

    def _check_beta(self) -> Config:
        """Beta diffusion: pixels, one network, its own loss and sampler."""
        p = self.process
        if self.sample.sampler != "beta":
            raise ValueError(
                f"process.family: beta samples with sample.sampler: beta, not the Gaussian "
                f"sampler {self.sample.sampler!r}"
            )
        if p.basis.type != "identity" or p.prior.type != "white":
            raise ValueError(
                "process.family: beta acts on pixels: it needs process.basis.type: identity "
                f"and process.prior.type: white, got {p.basis.type} and {p.prior.type}"
            )
        unsupported = {
            "model.multiscale": self.model.multiscale is not None,
            "conditional": self.conditional is not None,
            "model.num_classes": self.model.num_classes is not None,
            "loss.softness": self.loss.softness is not None,
            "sample.skip": self.sample.skip is not None,
            "sample.budgets": self.sample.budgets is not None,
            "process.transform": p.transform is not None,
            "loss.ndm": self.loss.ndm is not None,
            "loss.t_sampling: log-normal": self.loss.t_sampling == "log-normal",
        }
        for key, present in unsupported.items():
            if present:
                raise ValueError(f"process.family: beta does not support {key}")
        if self.model.backbone == "lego":
            raise ValueError("process.family: beta takes model.backbone unet, dit or mlp")
        if p.beta is None:
            p.beta = BetaProcessConfig()
        if self.loss.beta is None:
            self.loss.beta = BetaLossConfig()
        self._check_backbone(self.data.resolution)
        return self

    def _check_ndm(self) -> None:
        """A Neural Diffusion Model: one unconditional network on a scalar schedule."""
        transform, schedule = self.process.transform, self.process.schedule
        unsupported = {
            "model.multiscale": self.model.multiscale is not None,
            "conditional": self.conditional is not None,
            "model.num_classes": self.model.num_classes is not None,
            "loss.softness": self.loss.softness is not None,
            "train.patch": self.train.patch is not None,
            "sample.skip": self.sample.skip is not None,
            "model.backbone: lego": self.model.backbone == "lego",
        }
        for key, present in unsupported.items():
            if present:
                raise ValueError(f"process.transform (NDM) does not support {key}")
        if transform.type == "learned":
            if schedule.type not in SCALAR_SCHEDULES:
                raise ValueError(
                    f"process.transform: learned needs a schedule whose every component moves "
                    f"at every t (g > 0): one of {', '.join(SCALAR_SCHEDULES)}, got "
                    f"{schedule.type}"
                )
            if self.sample.sampler not in NDM_SAMPLERS:
                raise ValueError(
                    f"process.transform: learned samples with sample.sampler one of "
                    f"{', '.join(NDM_SAMPLERS)}, got {self.sample.sampler!r}"
                )
        if self.loss.ndm is None:
            self.loss.ndm = NDMLossConfig()

    def _check_msf(self) -> None:
        basis, schedule = self.process.basis, self.process.schedule
        if basis.type != "haar":
            raise ValueError(f"process.schedule.type: msf needs the haar basis, got {basis.type}")
        if schedule.levels is not None:
            if basis.levels is None:
                basis.levels = schedule.levels
            elif basis.levels != schedule.levels:
                raise ValueError(
                    f"process.schedule.levels={schedule.levels} differs from "
                    f"process.basis.levels={basis.levels}"
                )

    def _check_softness(self) -> None:
        lo, hi = self.loss.softness.min, self.loss.softness.max
        schedule = self.process.schedule
        if schedule.type != "soft":
            raise ValueError(
                f"loss.softness needs process.schedule.type: soft, got {schedule.type}"
            )
        if lo > hi:
            raise ValueError(f"loss.softness needs min <= max, got {lo} and {hi}")
        if not lo <= schedule.softness <= hi:
            raise ValueError(
                f"process.schedule.softness={schedule.softness} lies outside the range the "
                f"model is trained on, loss.softness [{lo}, {hi}]"
            )
        if self.model.noise_conditioning != "log_snr_groups" or self.model.multiscale:
            raise ValueError(
                "loss.softness needs model.noise_conditioning: log_snr_groups (the network "
                "tells softnesses apart by the group log-SNRs) and no model.multiscale"
            )

    def _check_patch(self) -> None:
        patch, basis, res = self.train.patch, self.process.basis, self.data.resolution
        if basis.type not in ("identity", "haar"):
            raise ValueError(
                "train.patch needs a basis whose components are local: identity or haar; "
                f"{basis.type} components are global (a crop of the image is not a crop of them)"
            )
        if self.model.multiscale is not None:
            raise ValueError(
                "train.patch does not support model.multiscale (its scales run on pooled "
                "images; crops of every scale are not implemented)"
            )
        if self.conditional is not None:
            raise ValueError("train.patch does not support conditional models")
        m = self.model
        if m.backbone in ("unet", "dit") and getattr(m, m.backbone).coord_channels != 2:
            raise ValueError(
                f"train.patch needs coordinate channels: set model.{m.backbone}.coord_channels: 2"
            )
        align = 2 ** self.haar_levels() if basis.type == "haar" else 1
        for p in patch.sizes:
            if p > res:
                raise ValueError(f"train.patch.sizes: {p} exceeds data.resolution={res}")
            if p % align:
                raise ValueError(
                    f"train.patch.sizes: {p} must be a multiple of 2^levels = {align} on the haar "
                    "basis (crops of the image are then crops of every band)"
                )
            self._check_backbone(p, f"the patch size {p} (train.patch.sizes)")

    def haar_levels(self) -> int:
        """The Haar basis's levels (its default for the resolution when null)."""
        from nudiff.bases.haar import default_haar_levels

        levels = self.process.basis.levels
        return levels if levels is not None else default_haar_levels(self.data.resolution)

    def scale_levels(self) -> list[int]:
        """A multi-scale model's dropped Haar levels per scale, finest first (the config-level
        twin of :func:`nudiff.models.multiscale.stages`)."""
        levels = self.haar_levels()
        if self.process.schedule.type == "msf":
            return [0, levels]
        return list(range(levels + 1))

    def _check_backbone(
        self, res: int, where: str = "data.resolution", m: ModelConfig | None = None
    ) -> None:
        """Raise unless the backbone of ``m`` (default ``model``) can run on ``res`` x ``res``
        images."""
        m = m or self.model
        if m.backbone == "mlp":  # any size: it flattens the data
            return
        if m.backbone == "unet":
            factor = 2 ** (len(m.unet.channel_mult) - 1)
            if res % factor:
                raise ValueError(
                    f"model.unet.channel_mult has {len(m.unet.channel_mult)} levels, which "
                    f"needs {where} divisible by {factor}, got {res}"
                )
        elif m.backbone == "dit":
            if res % m.dit.patch_size:
                raise ValueError(
                    f"model.dit.patch_size={m.dit.patch_size} needs {where} divisible by it, "
                    f"got {res}"
                )
            if m.dit.width % m.dit.heads:
                raise ValueError("model.dit.width must be divisible by model.dit.heads")
        else:
            try:
                lego_bricks(m.lego, res)
            except ValueError as e:
                raise ValueError(f"model.lego does not fit {where} ({res}x{res}): {e}") from None

    def _check_guidance(self) -> None:
        g = self.sample.guidance_interval
        if g is not None and not 0 <= g[0] < g[1] <= 1:
            raise ValueError(f"sample.guidance_interval must satisfy 0 <= lo < hi <= 1, got {g}")
        if self.sample.guidance != 1 and self.model.num_classes is None:
            raise ValueError("sample.guidance needs a class-conditional model (model.num_classes)")

    def _check_conditional(self) -> None:
        from nudiff.conditional.tasks import build_task

        c = self.conditional
        shape = (self.data.channels, self.data.resolution, self.data.resolution)
        build_task(c.task, coverage=c.coverage).check(shape)
        if self.model.multiscale is not None:
            raise ValueError("conditional models do not support model.multiscale yet")
        if self.model.backbone == "lego":
            raise ValueError("conditional models take model.backbone unet or dit, not lego")
        if self.model.num_classes is not None:
            raise ValueError("conditional models do not take model.num_classes")
        if self.model.noise_conditioning != "log_snr_groups":
            raise ValueError("conditional models take model.noise_conditioning: log_snr_groups")
        if self.model.sigma_data == "data":
            raise ValueError("conditional models take a numeric model.sigma_data (e.g. 0.5)")
        if c.estimator == "cdiffe" and self.process.schedule.type in (
            "multispeed",
            "soft",
            "sequential",
        ):
            raise ValueError("conditional.estimator cdiffe needs a scalar process.schedule")

    def _check_multiscale(self) -> None:
        ms, basis = self.model.multiscale, self.process.basis
        if basis.type != "haar" or self.process.schedule.type not in ("multispeed", "msf"):
            raise ValueError(
                "model.multiscale needs process.basis.type: haar and process.schedule.type: "
                f"multispeed or msf, got {basis.type} and {self.process.schedule.type}"
            )
        res, levels = self.data.resolution, self.haar_levels()
        if levels < 1:
            raise ValueError(f"model.multiscale needs at least 1 Haar level, got {levels}")
        dropped = self.scale_levels()
        n = len(dropped)
        for key in ("channels", "scale_weights", "stages"):
            value = getattr(ms, key)
            if value is not None and len(value) != n:
                raise ValueError(
                    f"model.multiscale.{key} needs one entry per scale ({n} for "
                    f"{self.process.schedule.type} on {levels} Haar levels, finest first), got "
                    f"{len(value)}"
                )
        if ms.scale_weights is not None and not sum(ms.scale_weights) > 0:
            raise ValueError("model.multiscale.scale_weights must not all be 0")
        if ms.share and ms.stages is not None:
            raise ValueError("model.multiscale.share runs one network: it takes no stages")
        coarsest = res >> levels
        if ms.share and self.model.backbone == "lego":
            raise ValueError("model.multiscale.share needs model.backbone unet or dit, not lego")
        if ms.share:
            factor = 2 ** (len(self.model.unet.channel_mult) - 1)
            if self.model.backbone == "dit":
                self._check_backbone(coarsest, f"the coarsest scale ({coarsest}x{coarsest})")
            elif coarsest % factor:
                raise ValueError(
                    f"model.multiscale.share runs one network at every scale down to {coarsest}"
                    f"x{coarsest}, which model.unet.channel_mult's "
                    f"{len(self.model.unet.channel_mult)} levels cannot halve "
                    f"{len(self.model.unet.channel_mult) - 1} times"
                )
        else:
            for s, d in enumerate(dropped):  # one network per scale, on its scale's image
                m = stage_model(self.model, s)
                if m.backbone != "unet":  # UNets drop the levels a small image cannot reach
                    where = f"the {res >> d}x{res >> d} scale" + (
                        f" (model.multiscale.stages[{s}])" if ms.stages else ""
                    )
                    self._check_backbone(res >> d, where, m)
        if self.loss.t_sampling == "interval":
            raise ValueError(
                "loss.t_sampling: interval does not apply to model.multiscale, which draws t "
                "in each scale's interval"
            )
        if self.sample.budgets is not None and len(self.sample.budgets) != n:
            raise ValueError(
                f"sample.budgets needs one entry per scale ({n}, coarsest first) for "
                f"model.multiscale, got {len(self.sample.budgets)}"
            )


#: schedules with one alpha, sigma for all components (a learned NDM transform needs g > 0)
SCALAR_SCHEDULES = ("vp-cosine", "vp-linear", "ve", "edm", "rectified-flow")
#: the samplers of an NDM with a learned transform (:data:`nudiff.ndm.sampler.NDM_SAMPLERS`)
NDM_SAMPLERS = ("ddim", "ancestral", "dopri5")


def stage_model(m: ModelConfig, scale: int) -> ModelConfig:
    """``m`` with scale ``scale``'s :class:`StageConfig` applied (``m`` itself without
    ``multiscale.stages``); a bad override is a ValueError naming its key."""
    stages = m.multiscale.stages if m.multiscale is not None else None
    if stages is None:
        return m
    stage = stages[scale]
    update: dict[str, Any] = {"backbone": stage.backbone or m.backbone}
    for name, section in (("unet", UNetConfig), ("dit", DiTConfig), ("lego", LegoConfig)):
        keys = getattr(stage, name)
        if keys:
            try:
                update[name] = section.model_validate({**getattr(m, name).model_dump(), **keys})
            except ValidationError as err:
                where = f"model.multiscale.stages[{scale}].{name}"
                raise ValueError(
                    "; ".join(f"{where}.{line}" for line in format_error(err, section).split("\n"))
                ) from None
    return m.model_copy(update=update)


def lego_bricks(lego: LegoConfig, resolution: int) -> list[tuple[int, int, int, int]]:
    """The ``[region, patch, depth, width]`` bricks of ``lego`` at ``resolution`` (validated)."""
    from nudiff.models.lego import lego_stack

    if lego.bricks is None:
        depths = lego.depth if isinstance(lego.depth, list) else None
        bricks = lego_stack(
            lego.stacking, resolution, lego.width, depths[0] if depths else lego.depth, lego.patch
        )
        if depths is not None:
            if len(depths) != len(bricks):
                raise ValueError(
                    f"model.lego.depth needs one depth per brick of the {lego.stacking} stacking "
                    f"({len(bricks)}), got {len(depths)}"
                )
            bricks = [(r, p, d, w) for (r, p, _, w), d in zip(bricks, depths, strict=True)]
    else:
        bricks = [tuple(b) for b in lego.bricks]
    if not bricks:
        raise ValueError("model.lego.bricks must list at least one brick")
    for i, (region, patch, depth, width) in enumerate(bricks):
        side = region or resolution  # region 0: the whole image
        if region < 0 or resolution % side:
            raise ValueError(
                f"model.lego brick {i}: region {region} must divide the image size {resolution}"
                " (0: the whole image)"
            )
        if patch < 1 or side % patch:
            raise ValueError(f"model.lego brick {i}: patch {patch} must divide its region {side}")
        if depth < 1 or width < 1 or width % lego.heads:
            raise ValueError(
                f"model.lego brick {i}: depth must be >= 1 and width ({width}) divisible by "
                f"model.lego.heads={lego.heads}"
            )
    return bricks


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
