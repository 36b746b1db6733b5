"""The command line speaks one language: every option of every command comes from the
vocabulary, with one meaning; every command takes --seed (and --device where a network runs);
--help shows defaults and choices; old spellings work with a note; the docs use the new ones."""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nudiff.cli import build_parser, main
from nudiff.cli.vocabulary import FLAGS, SAMPLER_NAMES, CommaList, is_deprecated, markdown_table

ROOT = Path(__file__).resolve().parents[1]
NO_NETWORK = {("data", "export"), ("schedule", "plot")}  # they run no network: no --device


def _leaves(parser, path=()):
    """(command path, parser) of every runnable command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*path, name))


LEAVES = list(_leaves(build_parser()))


def _options(parser):
    return [
        a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def test_every_command_is_found():
    names = {" ".join(p) for p, _ in LEAVES}
    for expected in ("train", "sample", "eval fd", "eval nll", "bench samplers", "bench beta-toy"):
        assert expected in names
    assert len(names) == 27  # 10 commands (eval, distill, ... with their actions) + 17 benchmarks


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_option_is_in_the_vocabulary_with_its_one_meaning(path, parser):
    for action in _options(parser):
        name = next(o for o in action.option_strings if o.startswith("--"))
        if is_deprecated(action):
            assert name not in FLAGS, f"{name} is deprecated and in the vocabulary"
            assert action.new in parser._option_string_actions, (name, action.new)
            continue
        assert name in FLAGS, f"nudiff {' '.join(path)}: {name} is not in the vocabulary"
        flag = FLAGS[name]
        assert action.help, (path, name)
        if flag.action == "bool":
            assert isinstance(action, argparse.BooleanOptionalAction), (path, name)
        elif flag.action == "store_true":
            assert isinstance(action, argparse._StoreTrueAction), (path, name)
        elif flag.action == "append":
            assert isinstance(action, argparse._AppendAction), (path, name)
        else:
            allowed = {flag.type, CommaList(flag.type or str)}
            assert action.type in allowed or (flag.type is None and action.type is None), (
                f"nudiff {' '.join(path)}: {name} has type {action.type}, the vocabulary "
                f"{flag.type}"
            )
            if flag.choices and action.choices:
                assert set(action.choices) <= set(flag.choices), (path, name)


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_takes_seed_and_device(path, parser):
    flags = {o for a in parser._actions for o in a.option_strings}
    assert "--seed" in flags, path
    if path not in NO_NETWORK:
        assert "--device" in flags, path
        device = parser._option_string_actions["--device"]
        assert device.default == "auto"


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_help_shows_defaults_and_choices(path, parser):
    text = " ".join(parser.format_help().split())
    for action in _options(parser):
        if is_deprecated(action) or action.help == argparse.SUPPRESS:
            continue
        if action.default not in (None, False) and not isinstance(action.default, bool):
            assert "(default: " in text, (path, action.option_strings)
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text.replace(", ", ","), (
                path,
                action.option_strings,
            )


def test_sampler_choices_are_the_registered_samplers():
    from nudiff.samplers import SAMPLERS

    assert set(SAMPLER_NAMES) == set(SAMPLERS) | {"beta", "onestep"}


def test_version_and_fast_import_of_the_parser(capsys):
    from nudiff import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"nudiff {__version__}"
    code = (
        "import sys; from nudiff.cli import build_parser; build_parser().format_help(); "
        "print(sorted({'torch', 'numpy', 'pydantic'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_spellings_work_with_a_one_line_note(capsys):
    p = build_parser()
    args = p.parse_args(["sample", "RUN", "--n", "8", "--budgets", "2,3"])
    assert args.n_samples == 8 and args.interval_steps == "2,3"
    err = capsys.readouterr().err
    assert "--n is deprecated, use --n-samples" in err
    assert "--budgets is deprecated, use --interval-steps" in err
    args = p.parse_args(["eval", "nll", "RUN", "--n", "5"])
    assert args.n_images == 5
    args = p.parse_args(
        ["features", "train", "--data", "d.npz", "--out", "f", "--train-steps", "7"]
    )
    assert args.train_steps == 7
    with pytest.raises(SystemExit):  # --steps is sampler steps everywhere: no alias here
        p.parse_args(["features", "train", "--data", "d.npz", "--out", "f", "--steps", "7"])
    from nudiff.cli.bench import rename_deprecated

    assert rename_deprecated(["bench", "multiscale_vs_uniform", "--json", "x"]) == [
        "bench",
        "multiscale-vs-uniform",
        "--json",
        "x",
    ]
    assert "deprecated" in capsys.readouterr().err


def test_an_unknown_device_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "RUN", "--device", "tpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown device 'tpu'" in err[-1]


def test_resolve_device_rule():
    import torch

    from nudiff.devices import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected == resolve_device(None).type
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_the_docs_print_the_vocabulary():
    """docs/cli.md holds the tables; after a change, paste the output of
    python -c 'from nudiff.cli.vocabulary import markdown_table; print(markdown_table())'"""
    assert markdown_table() in (ROOT / "docs" / "cli.md").read_text()


def _doc_commands():
    """Every ``nudiff ...`` command in the README and docs: the code-block lines that run it
    (continuations joined, comments dropped) and the inline code spans that start with it."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        lines += re.findall(r"`((?:torchrun [^`\n]*)?nudiff [a-z][^`\n]*)`", prose)
        for line in lines:
            line = line.split(" #")[0].strip()
            match = re.match(r"^(?:[A-Z_]+=\S+ )*(?:torchrun .*?-m )?(nudiff [a-z].*)$", line)
            if match:
                yield path.name, match.group(1).strip()


DOC_COMMANDS = sorted(set(_doc_commands()))


def test_the_docs_have_commands():
    assert len(DOC_COMMANDS) > 50


@pytest.mark.parametrize("where,line", DOC_COMMANDS)
def test_the_docs_use_only_current_flags(where, line, capsys):
    # a synopsis: [optional parts], --one X | --other Y alternatives (the first is kept)
    line = re.sub(r"\s*\|\s*--[\w-]+(?: [^\s\[\]|-][^\s\[\]]*)?", "", line)
    argv = shlex.split(line.replace("[", " ").replace("]", " "))[1:]
    for stop in ("&", "&&", ";", ">", "|"):  # shell around the command
        argv = argv[: argv.index(stop)] if stop in argv else argv
    argv = [a for a in argv if a != "..."]
    try:
        build_parser().parse_args(argv)
    except SystemExit:  # --help, or a command shown without its required arguments
        pass
    err = capsys.readouterr().err
    for problem in ("deprecated", "unrecognized arguments", "invalid", "ambiguous"):
        assert problem not in err, f"{where}: {line}\n{err}"
