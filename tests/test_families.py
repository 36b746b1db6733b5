"""The families as plug-ins: lazy registration, a core that names no family, the documented
tables, old run folders, and the bad inputs that used to slip through."""

import ast
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nudiff.cli import main
from nudiff.families import FAMILIES, family_name, get_family
from nudiff.families.features import FEATURES, capability_table, families_table

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "nudiff"
OLD_RUNS = Path(__file__).parent / "fixtures" / "old_runs"
CORE = ("bases", "schedules", "process.py", "models", "samplers", "losses.py", "eval", "training")
# a specific family (the registry and the capability table are how the core asks generically)
FAMILY_PACKAGES = ("nudiff.families.gaussian", "nudiff.ndm", "nudiff.beta", "nudiff.distill")


def test_importing_nudiff_or_the_registry_imports_no_family():
    code = (
        "import sys, nudiff, nudiff.families\n"
        "print(sorted(m for m in sys.modules if m.startswith(('nudiff.ndm', 'nudiff.beta', "
        "'nudiff.distill', 'nudiff.families.gaussian'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_core_names_no_family():
    """Nothing in the maths, networks, objectives, sampling, evaluation or training layers
    imports a particular family (lazily or not)."""
    offenders = []
    for part in CORE:
        for path in sorted((SRC / part).rglob("*.py")) if (SRC / part).is_dir() else [SRC / part]:
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                offenders += [
                    f"{path.relative_to(SRC)}: {n}" for n in names if n.startswith(FAMILY_PACKAGES)
                ]
    assert not offenders, offenders


def test_no_import_cycles_and_no_long_functions():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "structure.py"), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "import cycles (strongly connected groups): 0" in out, out
    assert "functions over 80 lines: 0" in out, out


def test_every_family_is_registered_and_consistent():
    names = {f.name for f in FEATURES}
    for name in FAMILIES:
        family = get_family(name)
        assert family.name == name and family.key and family.selected_by and family.description
        assert family.features <= names, family.features - names


def test_the_architecture_page_prints_the_tables():
    """docs/architecture.md holds the tables; after a change, paste the output of
    python -c 'from nudiff.families.features import families_table, capability_table;
    print(families_table()); print(capability_table())'"""
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert families_table() in text and capability_table() in text


def _tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def old_runs(tmp_path):
    shutil.copytree(OLD_RUNS, tmp_path / "old_runs")
    return tmp_path / "old_runs"


@pytest.mark.parametrize("name", ["gaussian", "ndm", "beta", "sid"])
def test_run_folders_of_the_earlier_version_load_sample_and_resume(name, old_runs, tmp_path):
    run = old_runs / name
    png = tmp_path / "s.png"
    assert main(["sample", str(run), "--n-samples", "3", "--out", str(png), "--device", "cpu"]) == 0
    assert png.is_file()
    more = ["--set", "train.steps=3", "--set", "train.checkpoint_every=1", "--device", "cpu"]
    if name == "sid":  # the teacher's checkpoint, wherever the fixture lies now
        teacher = old_runs / "gaussian" / "checkpoints" / "step_000002"
        more += ["--set", f"distill.teacher={teacher}"]
        assert main(["distill", "sid", str(run), "--out", str(run), "--resume", *more]) == 0
    else:
        assert main(["train", str(run / "config.yaml"), "--out", str(run), "--resume", *more]) == 0
    assert (run / "checkpoints" / "step_000003").is_dir()


def test_resuming_with_another_familys_config_leaves_the_run_untouched(old_runs, capsys):
    run = old_runs / "gaussian"
    before = _tree_digest(run)
    beta = old_runs / "beta" / "config.yaml"
    assert main(["train", str(beta), "--out", str(run), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a process.family: gaussian run" in err[0], err
    # the same family with another network: the weights do not fit
    args = ["train", str(run / "config.yaml"), "--out", str(run), "--resume", "--device", "cpu"]
    assert main([*args, "--set", "model.mlp.width=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this config's model" in err[0], err
    # and a fresh run into a folder with checkpoints
    assert main(["train", str(run / "config.yaml"), "--out", str(run), "--device", "cpu"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert _tree_digest(run) == before  # nothing rewritten, config.yaml included


def test_command_line_sampling_settings_meet_the_configs_checks(old_runs, tmp_path, capsys):
    run, png = str(old_runs / "gaussian"), str(tmp_path / "s.png")
    for extra, message in [
        (["--guidance", "-1"], "sample.guidance"),
        (["--guidance-interval", "0.2,0.8"], "so does sample.guidance_interval"),
        (["--sampler", "beta"], "sample.sampler beta needs process.family: beta"),
    ]:
        capsys.readouterr()
        assert main(["sample", run, "--out", png, "--device", "cpu", *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    # a Beta run refuses what its family does not support, whatever asks for it
    beta = str(old_runs / "beta")
    assert main(["sample", beta, "--out", png, "--grid", "uniform", "--device", "cpu"]) == 2
    assert "process.family: beta does not support sample.grid" in capsys.readouterr().err


def test_a_one_step_generator_has_no_likelihood(old_runs, capsys):
    assert main(["eval", "nll", str(old_runs / "sid"), "--n-images", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nudiff eval: error: distill (SiD) does not support nudiff eval nll"]


def test_family_of_a_config():
    from nudiff.config import validate

    assert family_name(validate({})) == "gaussian"
    assert (
        family_name(
            validate(
                {
                    "process": {"family": "beta", "basis": {"type": "identity"}},
                    "sample": {"sampler": "beta"},
                }
            )
        )
        == "beta"
    )
