"""The configuration reference, generated from the config models.

Every key of :class:`nudiff.config.Config` (and of the sections the families add to it) with
its type, default and description, as Markdown::

    python -m nudiff.config_reference            # print it
    python -m nudiff.config_reference --write    # write docs/guides/config-reference.md

A key's description is its ``Field(description=...)`` when the model declares one, else the
entry for it in :data:`DESCRIPTIONS` below; each section starts with its model's docstring.
``tests/test_docs.py`` checks that every key has a description and that the committed page
equals :func:`markdown_reference`.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGE = Path("docs") / "guides" / "config-reference.md"

# Descriptions of the keys whose field declares none, per model class and field name (read
# from the models' docstrings and from the code that uses each key).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Config": {
        "data": "which images to train on",
        "process": "the diffusion process: basis, prior and schedule (or Beta diffusion)",
        "model": "the denoiser: prediction, preconditioning and backbone network",
        "loss": "the training objective: weighting and time sampling",
        "train": "optimiser, EMA, budgets, logs, checkpoints and sample grids",
        "sample": "defaults of the sample grids during training and of `nudiff sample`",
        "conditional": "conditional generation (super-resolution, inpainting, colorization); "
        "null: an unconditional model",
        "distill": "a SiD distillation, written by `nudiff distill sid`; null: none",
    },
    "DataConfig": {
        "name": "the source: built-in `shapes`, `fields`, `panorama` or `toy`; `npz` or `folder` "
        "files; "
        "`torchvision` or `huggingface` datasets",
        "resolution": "image height in pixels that every source is brought to, and the width "
        "unless `width` says otherwise (`toy`: 1; otherwise at least 4)",
        "channels": "1 (grey) or 3 (RGB); every source is converted to it",
        "size": "number of images of the procedural sources (`shapes`, `fields`, `panorama`, "
        "`toy`)",
        "seed": "seed of the procedural sources: which images they draw",
        "path": "`npz`: the file; `folder`: the folder; `torchvision`: where the dataset is "
        "stored or downloaded; `huggingface`: the dataset's Hub id or local path. Relative to "
        "the working directory; an `npz` file not found there is also looked for under "
        "`$NUDIFF_DATA`",
        "key": "`npz`: the image array (null: `x_train`, else the only uint8 image array); "
        "`torchvision`: the dataset class, e.g. `CIFAR10`; `huggingface`: the image column "
        "(null: the first); `toy`: `toy1` (null) or `toy2`",
        "resize": "`npz`: how images reach `resolution`: `pad` centres them on a background of "
        "-1 (MNIST 28 -> 32), `resize` centre-crops and resizes (bicubic)",
        "hflip": "random horizontal flips of the training batches (drawn from the trainer's seed)",
        "holdout": "the last `holdout` images form the validation split and are excluded from "
        "training",
        "exponent": "`fields`, `panorama`: the power spectrum (of the fields, of the ridge lines) "
        "falls as `1 / f**exponent`",
        "min_shapes": "`shapes`: fewest shapes per image",
        "max_shapes": "`shapes`: most shapes per image",
    },
    "ProcessConfig": {
        "family": "`gaussian`: the linear process (`basis`, `prior`, `schedule`); `beta`: "
        "Beta diffusion (the `beta` section)",
        "basis": "the orthonormal basis the process acts in",
        "prior": "the per-component mean and scale that whiten the components",
        "schedule": "the noise schedule, chosen by its `type` (one section per type below)",
        "beta": "Beta diffusion's process (with `family: beta`)",
        "transform": "a Neural Diffusion Model's learned transform; null: none",
    },
    "BasisConfig": {
        "type": "`identity` (pixels), `haar` (wavelets), `dct`, `fourier` (real) or `pca` "
        "(fitted to the data)",
        "levels": "`haar` only: Haar levels (null: as many as the resolution allows, down to 4x4)",
        "pca_samples": "`pca`: training images the basis is fitted on",
    },
    "PriorConfig": {
        "type": "`white`: mean 0, scale 1; `data`: per-component mean and std of training "
        "images in the basis (GUD's data-matched prior), saved with the model",
        "fit_samples": "`data`: training images the prior is fitted on",
    },
    "VPCosineConfig": {
        "type": "the variance-preserving cosine schedule (Nichol & Dhariwal), truncated to "
        "the log-SNR range",
        "log_snr_min": "log-SNR at t = 1",
        "log_snr_max": "log-SNR at t = 0",
        "shift_resolution": "simple diffusion's shift for images of this many pixels a side "
        "`d`: the log-SNR gains `2 log(base_resolution / d)` (null: no shift)",
        "base_resolution": "the resolution at which the unshifted cosine is right (64 in "
        "simple diffusion); with `interpolated`, the shift at t = 1",
        "interpolated": "simple diffusion's interpolated schedule: log-SNR `t lambda_base(t) + "
        "(1 - t) lambda_to(t)` of the schedules shifted for `base_resolution` and "
        "`interpolate_to` (needs `shift_resolution`)",
        "interpolate_to": "`interpolated`: the base resolution whose shift is reached at "
        "t = 0, at least `base_resolution` (null: `shift_resolution`, i.e. no shift at t = 0)",
    },
    "VPLinearConfig": {
        "type": "DDPM's / the VP-SDE's linear beta: `beta(t) = beta_min + t (beta_max - beta_min)`",
        "beta_min": "beta at t = 0",
        "beta_max": "beta at t = 1",
        "t_min": "the smallest time (the log-SNR is infinite at t = 0); sampling stops there",
    },
    "VEConfig": {
        "type": "variance exploding: `alpha = 1`, `sigma = sigma_min (sigma_max / sigma_min)^t`",
        "sigma_min": "sigma at t = 0",
        "sigma_max": "sigma at t = 1",
    },
    "EDMConfig": {
        "type": "EDM (Karras et al.): `alpha = 1`, sigma rho-spaced in t from `sigma_min` to "
        "`sigma_max`",
        "sigma_min": "sigma at t = 0",
        "sigma_max": "sigma at t = 1",
        "rho": "the exponent of the rho spacing",
    },
    "RectifiedFlowConfig": {
        "type": "rectified flow / flow matching with a Gaussian source: `alpha = 1 - t`, "
        "`sigma = t`",
        "t_min": "the smallest time; sampling stops there",
    },
    "MultiSpeedConfig": {
        "type": "MSDiff's multi-speed schedule: every Haar band is noised from t = 0 until "
        "its finishing time",
        "finishing_times": "band k's finishing time, finest band first, increasing in "
        "(0, 1] (null: equally spaced, the coarsest at 1)",
        "log_snr_max": "every band's log-SNR at t = 0",
        "log_snr_min": "a band's log-SNR at its finishing time and after it",
    },
    "MSFConfig": {
        "type": "MSF's two stages on the haar basis: the residual (detail bands) during "
        "`[0, split]`, then the base (approximation band) during `[split, 1]`",
        "levels": "Haar levels: the base is the image pooled by `2^levels` (null: "
        "`process.basis.levels`; set here, it sets them)",
        "split": "the time at which the residual is pure noise and the base starts to move",
        "log_snr_max": "log-SNR of a part before its stage",
        "log_snr_min": "log-SNR of a part at the end of its stage and after it",
    },
    "SoftConditioningConfig": {
        "type": "GUD's soft-conditioning: `-log-SNR` linear in t per component, offset by the "
        "component's label",
        "softness": "`.inf`: every component on the same schedule (standard diffusion); "
        "towards 0: one component group after the other (autoregression)",
        "g_denoise": "`-log-SNR` at the clean end of the range every component crosses",
        "g_noise": "`-log-SNR` at the noisy end of that range",
        "label": "the basis label that orders the components, e.g. `frequency`, `level`, `col` "
        "(null: the basis default); larger labels are noised first",
        "clip": "keep `-log-SNR` inside `[g_denoise, g_noise]`: the sequential variant, "
        "components frozen outside their window",
    },
    "SequentialConfig": {
        "type": "hard sequential windows: each distinct value of `label` gets an equal "
        "window, generated from the smallest value up",
        "label": "the basis label whose values get one window each, e.g. `col` (null: the "
        "basis default)",
        "overlap": "fraction in [0, 1) by which consecutive windows overlap (0: disjoint)",
        "log_snr_max": "a component's log-SNR before its window",
        "log_snr_min": "a component's log-SNR at the end of its window and after it",
    },
    "BlurringConfig": {
        "type": "blurring diffusion (Hoogeboom & Salimans): heat dissipation of the DCT "
        "frequencies on top of a VP cosine noise schedule; needs `process.basis.type: dct`",
        "blur_sigma_max": "the blur's standard deviation at t = 1, in pixels (0: the plain "
        "cosine schedule)",
        "min_scale": "the floor of every frequency's blur factor, for numerical stability",
        "log_snr_min": "log-SNR of the noise schedule at t = 1 (blurred frequencies: lower)",
        "log_snr_max": "log-SNR at t = 0 (every frequency)",
    },
    "BetaProcessConfig": {
        "eta": "the concentration of the Beta distributions",
        "scale": "data are mapped to `x0 = shift + scale (x + 1) / 2` inside (0, 1); "
        "`shift + scale < 1`",
        "shift": "the offset of that map",
        "logit_alpha_max": "`logit alpha_t` at t = 0",
        "logit_alpha_min": "`logit alpha_t` at t = 1",
        "power": "`logit alpha_t` runs from its maximum to its minimum as `t^power`",
    },
    "TransformConfig": {
        "type": "`identity`: `F = u` (the linear process on the NDM bound, the baseline); "
        "`learned`: `F(u, t) = u + t N(u, t)`",
        "backbone": "the network `N`: `unet`, `dit` or `mlp`, configured by its `model` "
        "section (null: `model.backbone`)",
        "width": "base width of `N` (null: that section's)",
    },
    "ModelConfig": {
        "prediction": "what the backbone's output means: `edm` (EDM's preconditioned target "
        "with skip connection), `eps`, `x0` or `v`",
        "sigma_data": "std of the whitened clean components assumed by the preconditioning: "
        "`data` measures the mean per component and the std per basis group on "
        "`stats_samples` training images; a number is one std for all",
        "stats_samples": "training images the `data` statistics are measured on",
        "backbone": "the network: `unet`, `dit`, `lego` (each configured by the section of "
        "that name) or `mlp`",
        "num_classes": "a class-conditional model with this many classes (labels from the "
        "data: shapes, or an npz with `y_train`); null: unconditional",
        "label_dropout": "share of each batch trained with the null label, so the same network "
        "is the unconditional model of classifier-free guidance",
        "noise_conditioning": "what the backbone is told about the noise: `log_snr_groups` (t "
        "and the mean log-SNR of every basis group) or `t` alone",
        "unet": "the UNet backbone",
        "dit": "the DiT backbone",
        "lego": "the LEGO backbone",
        "mlp": "the MLP backbone",
        "multiscale": "a multi-scale model: one network per scale; null: one network for the "
        "whole process",
    },
    "UNetConfig": {
        "channels": "base width: level i has `channels * channel_mult[i]` channels",
        "channel_mult": "width multiplier per resolution level (each level halves the image)",
        "num_res_blocks": "residual blocks per level in the encoder (the decoder has one more)",
        "attn_levels": "indices of the levels with self-attention (the middle block always has it)",
        "dropout": "dropout rate inside the residual blocks",
        "head_channels": "channels per attention head",
    },
    "DiTConfig": {
        "patch_size": "side of the square patches that become tokens",
        "width": "channels of the tokens",
        "depth": "number of adaLN-Zero blocks",
        "heads": "attention heads",
        "mlp_ratio": "hidden width of each block's MLP, as a multiple of `width`",
    },
    "LegoConfig": {
        "stacking": "order of the bricks: `pg` (small regions first), `pr` (large first) or "
        "`u` (large, small, large)",
        "bricks": "explicit `[region, patch, depth, width]` per brick (region 0: the whole "
        "image); replaces `stacking`",
        "width": "channels of every brick",
        "depth": "blocks per brick: one number for all, or one per brick",
        "patch": "patch size of the bricks",
        "heads": "attention heads (must divide every brick's width)",
        "mlp_ratio": "hidden width of each block's MLP, as a multiple of the width",
        "joint_loss": "train every brick's output as a denoiser of its own (what lets sampling "
        "skip the last bricks)",
    },
    "MLPConfig": {
        "width": "units of each residual block",
        "depth": "number of residual blocks",
    },
    "MultiScaleConfig": {
        "share": "one network for all scales instead of one per scale",
        "channels": "base width of each scale's network, finest first (null: the backbone's)",
        "stages": "each scale's own backbone and section overrides, finest first",
        "scale_sampling": "which scale a training step trains: in turn (`round-robin`) or "
        "drawn with `scale_weights` (`random`)",
        "scale_weights": "`random`: probability of each scale, finest first (null: equal)",
    },
    "StageConfig": {
        "backbone": "this scale's network (null: `model.backbone`)",
        "unet": "keys that replace `model.unet`'s for this scale",
        "dit": "keys that replace `model.dit`'s for this scale",
        "lego": "keys that replace `model.lego`'s for this scale",
    },
    "LossConfig": {
        "weighting": "weight of the squared error per component: `uniform`, `likelihood` (the "
        "ELBO's) or `min-snr`",
        "min_snr_gamma": "`min-snr`: the weight is `min(SNR, min_snr_gamma)`",
        "band_weights": "a factor per basis group (multi-scale models: one per Haar band, "
        "finest first); null: all 1",
        "t_sampling": "how training times are drawn: `uniform`, `stratified` over the global "
        "batch, `interval` (in `t_interval`) or `log-normal` (EDM's noise levels)",
        "log_snr_mean": "`log-normal`: mean of the mean log-SNR over components",
        "log_snr_std": "`log-normal`: its standard deviation",
        "softness": "train one model over this range of the soft-conditioning schedule's "
        "softness (null: the schedule's own softness only)",
        "t_interval": "`interval`: train on t in `[a, b]`, `0 <= a < b <= 1`",
        "beta": "Beta diffusion's objective (with `process.family: beta`)",
        "ndm": "the NDM objective (with `process.transform`)",
    },
    "SoftnessRange": {
        "min": "the smallest softness",
        "max": "the largest softness (`.inf`: standard diffusion)",
    },
    "BetaLossConfig": {
        "type": "`klub` (KL upper bounds) or `elbo` (the same KLs with swapped arguments)",
        "w_cond": "weight of the conditional KL at `s = s_ratio t`",
        "w_marg": "weight of the marginal KL",
        "s_ratio": "the earlier time of the conditional KL, as a fraction of t",
        "t_min": "t is drawn uniformly in `[t_min, 1]`",
    },
    "NDMLossConfig": {
        "bound": "`continuous`: the continuous-time bound (`dF/dt` by JVP); `discrete`: the "
        "`steps`-step bound",
        "steps": "`discrete`: number of steps of the bound",
        "dequantize": "train on 8-bit images dequantised uniformly, as the likelihood "
        "evaluation sees them",
    },
    "TrainConfig": {
        "steps": "optimiser steps of the run",
        "batch_size": "the global batch (all processes and micro-batches); divisible by "
        "processes x `grad_accum`",
        "lr": "AdamW's learning rate (after the warm-up)",
        "weight_decay": "AdamW's weight decay",
        "betas": "AdamW's betas, each in [0, 1)",
        "warmup_steps": "steps of linear learning-rate warm-up",
        "ema_halflife_images": "half-life of the EMA of the weights, counted in images",
        "mixed_precision": "`bf16` or `fp16` autocast (fp16 with a gradient scaler); applies "
        "on CUDA only, float32 elsewhere",
        "seed": "seed of the initial weights, the data order and the noise (`--seed`)",
        "log_every": "steps between rows of `log.csv` (and TensorBoard)",
        "checkpoint_every": "steps between checkpoints (one is also written at the end)",
        "keep_checkpoints": "how many of the newest checkpoints are kept",
        "sample_n": "images per sample grid during training",
        "num_workers": "DataLoader worker processes",
        "tensorboard": "also write TensorBoard logs to `RUN/tb`",
    },
    "PatchConfig": {
        "sizes": "patch sizes in pixels, e.g. `[R/4, R/2, R]`",
        "probs": "probability of each size (null: equal; `schedule: fixed`)",
        "schedule": "`fixed` (draw with `probs`) or `progressive` (from the first size to the "
        "last over `ramp_steps`)",
        "ramp_steps": "steps of the progressive schedule's ramp (then the last size only)",
        "batch_multiplier": "a step at size `p` loads `(R / p)^2` (`area`), `R / p` (`side`) or "
        "1 (`none`) times `train.batch_size` images",
    },
    "SampleConfig": {
        "sampler": "the sampler, e.g. `dpmpp-2m`, `unipc`, `ddim`, `heun` (`nudiff sample "
        "--help` lists them)",
        "steps": "sampler steps",
        "grid": "time grid: `auto`, `uniform`, `log-snr`, `edm` or `optimized` (fitted to the "
        "run's data moments for the sampler)",
        "budgets": "steps per interval between the schedule's breakpoints, from t = 1 down "
        "(multi-scale models: per scale, coarsest first); replaces `steps`",
        "options": "the sampler's own options, e.g. `eta` (ddim), `order` (unipc), "
        "`rtol`/`atol` (dopri5)",
        "n": "a number of samples; not read by the trainer or `nudiff sample`, which take "
        "`train.sample_n` and `--n-samples`",
        "guidance": "classifier-free guidance weight of class-conditional models (1: the "
        "conditional model)",
        "guidance_interval": "guide only at times t in `[lo, hi]` (null: at all times)",
        "skip": "LEGO brick skipping while sampling; null: none",
    },
    "SkipConfig": {
        "bricks": "`last` drops the last brick; an integer k keeps the first k",
        "from": "fraction of the sampling steps after which bricks are skipped",
    },
    "ConditionalConfig": {
        "task": "how the condition `y` is built from each training image: `sr2`, `sr4` "
        "(super-resolution), `inpaint-center`, `inpaint-boxes` or `colorization`",
        "estimator": "`cde` (y clean), `cdiffe` (y diffuses with x), `cmde` (y slower) or "
        "`vs-cmde` (cmde with y's speed annealed from x's)",
        "coverage": "inpainting tasks: the missing fraction of the image",
        "y_log_snr_min": "`cmde`, `vs-cmde`: y's log-SNR at t = 1",
        "anneal_steps": "`vs-cmde`: training steps over which y's speed is annealed",
    },
    "SiDConfig": {
        "method": "the distillation method",
        "teacher": "the teacher's checkpoint folder",
        "alpha": "SiD's alpha in the generator loss",
        "scale": "the generator loss's multiplier",
        "init_log_snr": "the generator's input noise level, as a mean log-SNR (SiD's "
        "`sigma_init = 2.5`: `-2 log 2.5`)",
        "t_max": "the generator loss's noise levels are drawn at `r ~ U(0, t_max)` on SiD's "
        "rho scale",
        "sigma_min": "the smallest noise level of that scale",
        "sigma_max": "the largest noise level of that scale",
        "rho": "the exponent of that scale",
        "steps": "the generator's steps k (1: SiD's one-step generator); each step re-noises "
        "the previous output to its time and denoises it, and `nudiff sample` takes k NFE",
        "last_log_snr": "the last step's noise level as a mean log-SNR: the k step levels are "
        "evenly spaced from `init_log_snr` to it (unused for k = 1)",
        "guidance": "classifier-free guidance of a class-conditional teacher's estimate in the "
        "generator loss (LSG's kappa_4)",
        "guidance_fake": "classifier-free guidance of the fake score's output in its own "
        "training loss (LSG's kappa_1)",
        "guidance_fake_eval": "classifier-free guidance of the fake score's estimate in the "
        "generator loss (LSG's kappa_2 = kappa_3); null: `guidance_fake`",
    },
}


# ------------------------------------------------------------------------------- walking
class _Key(typing.NamedTuple):
    path: str
    model: type[BaseModel]
    name: str  # the field's name in ``model``
    info: FieldInfo


class _Section(typing.NamedTuple):
    path: str  # dotted; "" for the root
    model: type[BaseModel]
    title: str  # the heading
    keys: list[_Key]


def _models_in(annotation) -> list[type[BaseModel]]:
    """The config models an annotation holds as a section (itself, optional, a union of them, or
    a list of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    if origin is list and args:
        return _models_in(args[0])
    return []


def _is_list(annotation) -> bool:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in args)
    return typing.get_origin(annotation) is list


def _key_name(name: str, info: FieldInfo) -> str:
    return info.alias or name


def sections(model: type[BaseModel] | None = None, path: str = "") -> list[_Section]:
    """The sections of ``model`` (default: the whole config), depth first, in field order."""
    if model is None:
        from nudiff.config import Config

        model = Config
    out: list[_Section] = []
    keys = [
        _Key(f"{path}.{_key_name(n, f)}".lstrip("."), model, n, f)
        for n, f in model.model_fields.items()
    ]
    title = f"`{path}`" if path else "Sections"
    out.append(_Section(path, model, title, keys))
    for key in keys:
        models = _models_in(key.info.annotation)
        if not models:
            continue
        sub = key.path + ("[i]" if _is_list(key.info.annotation) else "")
        if len(models) == 1:
            out += sections(models[0], sub)
            continue
        for m in models:  # a union chosen by a discriminator, e.g. process.schedule.type
            tag = key.info.discriminator
            value = typing.get_args(m.model_fields[tag].annotation)[0]
            nested = sections(m, sub)
            first = nested[0]
            nested[0] = first._replace(title=f"`{sub}` with `{tag}: {value}`")
            out += nested
    return out


def description(key: _Key) -> str | None:
    """The key's description: its field's, else its :data:`DESCRIPTIONS` entry (None: none)."""
    if key.info.description:
        return key.info.description
    return DESCRIPTIONS.get(key.model.__name__, {}).get(_key_name(key.name, key.info))


def undocumented_keys() -> list[str]:
    """Keys with no description (a field ``description`` or a :data:`DESCRIPTIONS` entry)."""
    return sorted(
        {f"{k.path} ({k.model.__name__})" for s in sections() for k in s.keys if not description(k)}
    )


def unused_descriptions() -> list[str]:
    """:data:`DESCRIPTIONS` entries that describe no key, or a key whose field has its own."""
    used = {
        (k.model.__name__, _key_name(k.name, k.info))
        for s in sections()
        for k in s.keys
        if not k.info.description
    }
    return sorted(
        f"{cls}.{name}"
        for cls, names in DESCRIPTIONS.items()
        for name in names
        if (cls, name) not in used
    )


# ---------------------------------------------------------------------------- formatting
def _number(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _constraints(metadata) -> str:
    parts = []
    for m in metadata:
        if isinstance(m, FieldInfo):  # Annotated[int, Field(ge=1)]
            parts += [c for c in [_constraints(m.metadata)] if c]
            continue
        for cls, attr, sign in _BOUNDS:
            if isinstance(m, cls):
                parts.append(f"{sign} {_number(getattr(m, attr))}")
        if isinstance(m, annotated_types.MinLen):
            parts.append(f"at least {m.min_length} item" + ("s" if m.min_length != 1 else ""))
    return ", ".join(parts)


def type_name(annotation, metadata=()) -> str:
    """A reader's name for a field's type: ``int (>= 1) or null``, ``list of float``, ..."""
    bounds = _constraints(metadata)
    name = _type_name(annotation)
    return f"{name} ({bounds})" if bounds else name


def _type_name(a) -> str:
    origin, args = typing.get_origin(a), typing.get_args(a)
    if a is type(None):
        return "null"
    if a is Any:
        return "any"
    if isinstance(a, type) and issubclass(a, BaseModel):
        return "section"
    if isinstance(a, type):
        return a.__name__
    if origin is typing.Annotated:
        return type_name(args[0], args[1:])
    if origin is typing.Literal:
        values = [f"`{_default_text(v)}`" for v in args]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(x) for x in args if x is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(x) for x in args) + "]"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return str(a)


def _plain(v):
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json", by_alias=True)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _default_text(v) -> str:
    """``v`` as it is written in YAML (flow style)."""
    text = yaml.safe_dump(_plain(v), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def default_text(key: _Key) -> str:
    info = key.info
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default is PydanticUndefined else info.default
    if isinstance(value, BaseModel):
        tag = info.discriminator
        if isinstance(tag, str):  # a section chosen by its type: name the type
            return f"`{tag}: {_default_text(getattr(value, tag))}`"
        return "—"  # a section: its keys follow
    return f"`{_default_text(value)}`"


def _cell(text: str) -> str:
    """Table-cell text: one line, pipes outside code spans escaped."""
    parts = " ".join(text.split()).split("`")
    return "`".join(p.replace("|", "\\|") if i % 2 == 0 else p for i, p in enumerate(parts))


_ROLE = re.compile(r":(?:class|mod|func|meth|data|attr):`~?([^`]+)`")


def _docstring(model: type[BaseModel], where: dict[str, str]) -> str:
    """A model's docstring as Markdown: Sphinx roles and ````code```` as code spans (a config
    model named by the key that holds it), indented lists as bullet lists."""
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""

    def role(m: re.Match) -> str:
        name = m.group(1)
        return f"`{where.get(name.rsplit('.', 1)[-1], name)}`"

    text = _ROLE.sub(role, inspect.cleandoc(doc)).replace("``", "`")
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        head = [ln for ln in lines if not ln.startswith(" ")]
        if len(head) == len(lines):  # a plain paragraph
            out.append(" ".join(ln.strip() for ln in lines))
            continue
        first = lines.index(next(ln for ln in lines if ln.startswith(" ")))
        items: list[str] = []
        for ln in lines[first:]:
            indent = len(ln) - len(ln.lstrip())
            if indent <= 4:
                items.append(ln.strip())
            else:
                items[-1] += " " + ln.strip()
        out.append(" ".join(ln.strip() for ln in lines[:first]))
        out.append("\n".join(f"- {item}" for item in items))
    return "\n\n".join(out)


HEADER = """\
# Configuration reference

<!-- Generated by `python -m nudiff.config_reference --write` from the config models in
src/nudiff; do not edit by hand. -->

A config is a YAML file of sections. Any key can be changed on the command line with
`--set KEY=VALUE` (repeatable; the value is parsed as YAML, e.g. `--set train.steps=2000`,
`--set sample.budgets=[4,8]`). Keys not set keep the defaults below; unknown keys and invalid
values are one-line errors that name the key. Each run writes its full, resolved config to
`RUN/config.yaml`. `null` is YAML's empty value: a section that is `null` by default is off
until it is given.

How configs are used: [Training](training.md). This page is generated from the config models
(`python -m nudiff.config_reference --write`).
"""


def markdown_reference() -> str:
    """The configuration reference page (Markdown)."""
    found = sections()
    where = {s.model.__name__: s.path for s in found if s.path}
    out = [HEADER]
    for s in found:
        depth = 2 if "." not in s.path else 3
        out.append(f"{'#' * depth} {s.title}\n")
        doc = _docstring(s.model, where)
        if doc:
            out.append(doc + "\n")
        out.append("| key | type | default | description |\n|---|---|---|---|")
        for k in s.keys:
            kind = type_name(k.info.annotation, k.info.metadata)
            text = description(k) or ""
            out.append(f"| `{k.path}` | {_cell(kind)} | {_cell(default_text(k))} | {_cell(text)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nudiff.config_reference",
        description="print the configuration reference (Markdown), or write it to the docs",
    )
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(PAGE),
        metavar="PATH",
        help=f"write the page to PATH (default: {PAGE}, from the repository root)",
    )
    args = parser.parse_args(argv)
    text = markdown_reference()
    if args.write is None:
        sys.stdout.write(text)
        return
    path = Path(args.write)
    if not path.parent.is_dir():
        parser.error(f"{path.parent} is not a folder (run from the repository root)")
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
