"""Every family x feature pair of the capability table, through the command line: a supported
pair trains a tiny model, checkpoints, resumes and samples (or runs its command); an
unsupported one is refused with the one generic error. There is no third outcome.

The table is read from the code (:data:`nudiff.families.features.FEATURES` and each family's
``features``), so a new feature or family is tested here without a new test."""

import pytest

from nudiff.cli import main
from nudiff.families import FAMILIES, get_family
from nudiff.families.features import FEATURES

TINY_UNET = "model.unet={channels: 4, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: []}"
COMMON = [
    "data={name: shapes, resolution: 8, size: 32, min_shapes: 1, max_shapes: 1}",
    TINY_UNET,
    "model.stats_samples=8",
    "train.steps=1",
    "train.batch_size=4",
    "train.checkpoint_every=1",
    "train.log_every=1",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.num_workers=0",
    "sample.steps=2",
]
LINEAR = [
    "process.basis={type: identity}",
    "process.schedule={type: vp-cosine}",
    "sample.sampler=dpmpp-2m",
]
BASES = {  # one tiny config per family (the SiD runs distil the Gaussian ones)
    "gaussian": [*COMMON, *LINEAR],
    "ndm": [*COMMON, *LINEAR, "process.transform={type: learned}", "sample.sampler=ddim"],
    "beta": [*COMMON, "process.family=beta", "process.basis={type: identity}"]
    + ["sample.sampler=beta"],
}
LEGO = "model.lego={bricks: [[4, 1, 1, 8], [0, 2, 1, 8]], heads: 2}"
# feature -> (overrides that ask for it, what else a supporting family needs for it to run)
ASKS = {
    "patch": (["train.patch={sizes: [4, 8]}"], ["model.unet.coord_channels=2"]),
    "class-labels": (["model.num_classes=6"], []),
    "guidance": (["sample.guidance=2.0"], ["model.num_classes=6"]),
    "softness-range": (
        ["loss.softness={min: 0.5, max: 2.0}"],
        ["process.basis={type: dct}", "process.schedule={type: soft, softness: 1.0}"],
    ),
    "multiscale": (
        ["model.multiscale={}"],
        ["process.basis={type: haar, levels: 1}", "process.schedule={type: multispeed}"],
    ),
    "brick-skipping": (["sample.skip={bricks: last, from: 0.5}"], ["model.backbone=lego", LEGO]),
    "log-normal-times": (["loss.t_sampling=log-normal"], []),
    "conditional": (["conditional={task: sr2, estimator: cde}"], ["model.sigma_data=0.5"]),
    "interval-steps": (["sample.budgets=[2]"], []),
    "optimized-grid": (["sample.grid=optimized"], []),
    "time-grid": (["sample.grid=uniform"], []),
    "basis": (["process.basis={type: dct}"], []),
    "data-prior": (["process.prior={type: data, fit_samples: 8}"], []),
    "dit": (["model.backbone=dit", "model.dit={patch_size: 2, width: 8, depth: 1, heads: 2}"], []),
    "lego": (["model.backbone=lego", LEGO], []),
    "mlp": (["model.backbone=mlp", "model.mlp={width: 16, depth: 1}"], []),
}
CONFIG_FEATURES = [f for f in FEATURES if f.active is not None]
COMMAND_FEATURES = [f for f in FEATURES if f.active is None]


def _sets(overrides):
    return sum((["--set", s] for s in overrides), [])


def test_every_config_feature_has_a_way_to_ask_for_it():
    assert {f.name for f in CONFIG_FEATURES} == set(ASKS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders by (family, feature), trained once and shared with the SiD pairs."""
    return {"root": tmp_path_factory.mktemp("composition")}


def _train_resume_sample(runs, family: str, feature: str, overrides) -> str:
    run = runs["root"] / f"{family}-{feature}"
    config = runs["root"] / "tiny.yaml"
    config.write_text("data: {name: shapes}\n")
    assert main(["train", str(config), "--out", str(run), *_sets(overrides)]) == 0
    resume = [*overrides, "train.steps=2"]
    assert main(["train", str(config), "--out", str(run), "--resume", *_sets(resume)]) == 0
    assert (run / "checkpoints" / "step_000002").is_dir()
    args = ["sample", str(run), "--out", str(run / "s.png"), "--n-samples", "2"]
    if feature == "conditional":  # full-size inputs: degraded by the task, scored against
        _condition_inputs(run / "cond.npz")
        args[-2:] = ["--condition", str(run / "cond.npz"), "--per-input", "1"]
    assert main(args) == 0
    runs[family, feature] = run
    return run


def _condition_inputs(path):
    import numpy as np

    np.savez(path, x_train=np.zeros((2, 8, 8, 3), np.uint8))


def _refused(capsys, args, family, key):
    capsys.readouterr()  # what earlier commands printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"{family.key} does not support {key}"), err


PAIRS = [(fam, f.name) for fam in ("gaussian", "ndm", "beta") for f in CONFIG_FEATURES]


@pytest.mark.slow
@pytest.mark.parametrize("family,feature", PAIRS)
def test_family_feature_pair(family, feature, runs, capsys):
    fam, (ask, needs) = get_family(family), ASKS[feature]
    if feature in fam.features:
        _train_resume_sample(runs, family, feature, [*BASES[family], *needs, *ask])
    else:
        config = runs["root"] / "tiny.yaml"
        config.write_text("data: {name: shapes}\n")
        args = ["train", str(config), "--out", str(runs["root"] / "refused")]
        _refused(capsys, [*args, *_sets([*BASES[family], *ask])], fam, _key(feature, ask))
        assert not (runs["root"] / "refused").exists()  # nothing written


def _key(feature: str, ask) -> str:
    """The key the error names: the feature's, or (the basis) the value asked for."""
    key = next(f for f in FEATURES if f.name == feature).key
    return key if isinstance(key, str) else "process.basis.type: dct"


@pytest.mark.slow
@pytest.mark.parametrize("feature", [f.name for f in CONFIG_FEATURES])
def test_distilled_family_feature_pair(feature, runs, capsys, tmp_path):
    """SiD distils the Gaussian pair's run, whose teacher carries a supported feature; an
    unsupported one asked of the distillation itself is refused."""
    sid, (ask, needs) = get_family("sid"), ASKS[feature]
    out = tmp_path / "sid"
    sets = ["train.steps=1", "train.batch_size=4", "train.checkpoint_every=1"]
    if feature in sid.features:
        teacher = runs.get(("gaussian", feature)) or _train_resume_sample(
            runs, "gaussian", feature, [*BASES["gaussian"], *needs, *ask]
        )
        distil = ["distill", "sid", str(teacher), "--out", str(out)]
        assert main([*distil, *_sets(sets)]) == 0
        assert main([*distil, "--resume", *_sets(["train.steps=2"])]) == 0
        args = ["sample", str(out), "--n-samples", "2", "--out", str(out / "s.png")]
        assert main(args) == 0 and (out / "checkpoints" / "step_000002").is_dir()
    else:
        teacher = runs.get(("gaussian", "base")) or _train_resume_sample(
            runs, "gaussian", "base", BASES["gaussian"]
        )
        distil = ["distill", "sid", str(teacher), "--out", str(out)]
        _refused(capsys, [*distil, *_sets([*sets, *ask])], sid, _key(feature, ask))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("feature", [f.name for f in COMMAND_FEATURES])
def test_family_command_pair(family, feature, runs, capsys, tmp_path):
    """``--resolution``, ``eval nll`` and being a SiD teacher: run, or the one error."""
    fam = get_family(family)
    if family == "sid":
        teacher = runs.get(("gaussian", "mlp")) or _train_resume_sample(
            runs, "gaussian", "mlp", [*BASES["gaussian"], *ASKS["mlp"][0]]
        )
        run = tmp_path / "sid"
        sets = _sets(["train.steps=1", "train.batch_size=4", "train.checkpoint_every=1"])
        assert main(["distill", "sid", str(teacher), "--out", str(run), *sets]) == 0
    else:
        run = runs.get((family, "base")) or _train_resume_sample(
            runs, family, "base", BASES[family]
        )
    commands = {
        "resolution": [
            "sample",
            str(run),
            "--resolution",
            "16",
            "--n-samples",
            "2",
            "--out",
            str(tmp_path / "big.png"),
        ],
        "likelihood": [
            "eval",
            "nll",
            str(run),
            "--n-images",
            "2",
            "--method",
            "elbo",
            "--times",
            "2",
            "--batch-size",
            "2",
        ],
        "teacher": [
            "distill",
            "sid",
            str(run),
            "--out",
            str(tmp_path / "student"),
            "--set",
            "train.steps=1",
        ],
    }
    key = next(f for f in FEATURES if f.name == feature).key
    if feature in fam.features:
        assert main(commands[feature]) == 0
    else:
        if family == "sid" and feature == "teacher":  # a distilled run is no teacher
            capsys.readouterr()
            assert main(commands[feature]) == 2
            assert "distil its teacher instead" in capsys.readouterr().err
            return
        _refused(capsys, commands[feature], fam, key)
