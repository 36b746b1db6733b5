"""The ``model`` section: the backbones (UNet, DiT, LEGO, MLP), a multi-scale model's
stages, and the rules that say whether a backbone runs at a given image size."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    stem_channels: int = Field(
        0, ge=0, description="channels of a 3x3 conv stem before patchifying (0: none)"
    )
    conv_head: bool = Field(False, description="a 3x3 conv on the decoded image")
    skips: bool = Field(False, description="U-ViT's long skips between mirrored blocks")


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
    stem_channels: int = Field(0, ge=0, description="every brick's conv stem (see model.dit)")
    conv_head: bool = Field(False, description="every brick's conv head (see model.dit)")
    skips: bool = Field(False, description="every brick's U-ViT skips (see model.dit)")
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
                raise ValueError("; ".join(_problems(err, where))) from None
    return m.model_copy(update=update)


def lego_bricks(
    lego: LegoConfig, resolution: int, width: int | None = None
) -> list[tuple[int, int, int, int]]:
    """The ``[region, patch, depth, width]`` bricks of ``lego`` for ``resolution`` x ``width``
    images (``width`` None: square), validated; a stacking's regions follow ``resolution``."""
    from nudiff.models.lego import lego_stack

    width = width or resolution

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
    size = f"{resolution}" if width == resolution else f"{resolution}x{width}"
    for i, (region, patch, depth, channels) in enumerate(bricks):
        if region < 0 or (region and (resolution % region or width % region)):
            raise ValueError(
                f"model.lego brick {i}: region {region} must divide the image size {size}"
                " (0: the whole image)"
            )
        if patch < 1 or (region or resolution) % patch or (not region and width % patch):
            side = region or size
            raise ValueError(f"model.lego brick {i}: patch {patch} must divide its region {side}")
        if depth < 1 or channels < 1 or channels % lego.heads:
            raise ValueError(
                f"model.lego brick {i}: depth must be >= 1 and width ({channels}) divisible by "
                f"model.lego.heads={lego.heads}"
            )
    return bricks


def check_backbone(
    m: ModelConfig, res: int, where: str = "data.resolution", width: int | None = None
) -> None:
    """Raise unless the backbone of the model section ``m`` runs on ``res`` x ``width`` images
    (``width`` None: square; ``where`` names that size in the error)."""
    width = width or res
    size = f"{res}" if width == res else f"{res}x{width}"
    if m.backbone == "mlp":  # any size: it flattens the data
        return
    if m.backbone == "unet":
        factor = 2 ** (len(m.unet.channel_mult) - 1)
        if res % factor or width % factor:
            raise ValueError(
                f"model.unet.channel_mult has {len(m.unet.channel_mult)} levels, which "
                f"needs {where} divisible by {factor}, got {size}"
            )
    elif m.backbone == "dit":
        if res % m.dit.patch_size or width % m.dit.patch_size:
            raise ValueError(
                f"model.dit.patch_size={m.dit.patch_size} needs {where} divisible by it, got {size}"
            )
        if m.dit.width % m.dit.heads:
            raise ValueError("model.dit.width must be divisible by model.dit.heads")
    else:
        try:
            lego_bricks(m.lego, res, width)
        except ValueError as e:
            raise ValueError(f"model.lego does not fit {where} ({res}x{width}): {e}") from None


def check_multiscale(cfg) -> None:
    """The rules of ``model.multiscale`` on a root config ``cfg``."""
    ms, basis = cfg.model.multiscale, cfg.process.basis
    if basis.type != "haar" or cfg.process.schedule.type not in ("multispeed", "msf"):
        raise ValueError(
            "model.multiscale needs process.basis.type: haar and process.schedule.type: "
            f"multispeed or msf, got {basis.type} and {cfg.process.schedule.type}"
        )
    res, levels = cfg.data.resolution, cfg.haar_levels()
    if levels < 1:
        raise ValueError(f"model.multiscale needs at least 1 Haar level, got {levels}")
    dropped = cfg.scale_levels()
    n = len(dropped)
    for key in ("channels", "scale_weights", "stages"):
        value = getattr(ms, key)
        if value is not None and len(value) != n:
            raise ValueError(
                f"model.multiscale.{key} needs one entry per scale ({n} for "
                f"{cfg.process.schedule.type} on {levels} Haar levels, finest first), got "
                f"{len(value)}"
            )
    if ms.scale_weights is not None and not sum(ms.scale_weights) > 0:
        raise ValueError("model.multiscale.scale_weights must not all be 0")
    if ms.share and ms.stages is not None:
        raise ValueError("model.multiscale.share runs one network: it takes no stages")
    coarsest = res >> levels
    if ms.share and cfg.model.backbone == "lego":
        raise ValueError("model.multiscale.share needs model.backbone unet or dit, not lego")
    if ms.share:
        factor = 2 ** (len(cfg.model.unet.channel_mult) - 1)
        if cfg.model.backbone == "dit":
            check_backbone(cfg.model, coarsest, f"the coarsest scale ({coarsest}x{coarsest})")
        elif coarsest % factor:
            raise ValueError(
                f"model.multiscale.share runs one network at every scale down to {coarsest}"
                f"x{coarsest}, which model.unet.channel_mult's "
                f"{len(cfg.model.unet.channel_mult)} levels cannot halve "
                f"{len(cfg.model.unet.channel_mult) - 1} times"
            )
    else:
        for s, d in enumerate(dropped):  # one network per scale, on its scale's image
            m = stage_model(cfg.model, s)
            if m.backbone != "unet":  # UNets drop the levels a small image cannot reach
                where = f"the {res >> d}x{res >> d} scale" + (
                    f" (model.multiscale.stages[{s}])" if ms.stages else ""
                )
                check_backbone(m, res >> d, where)
    if cfg.loss.t_sampling == "interval":
        raise ValueError(
            "loss.t_sampling: interval does not apply to model.multiscale, which draws t "
            "in each scale's interval"
        )
    if cfg.sample.budgets is not None and len(cfg.sample.budgets) != n:
        raise ValueError(
            f"sample.budgets needs one entry per scale ({n}, coarsest first) for "
            f"model.multiscale, got {len(cfg.sample.budgets)}"
        )


def _problems(err: ValidationError, where: str) -> list[str]:
    """pydantic's problems as ``where.key: message`` (unknown keys as such)."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        out.append(f"{where}.{loc}: {msg.removeprefix('Value error, ')}")
    return out
