"""``train.init_from``: fine-tuning starts from another run's weights with a fresh optimiser."""

import re

import torch

from conftest import QUICKSTART, sets, tiny_quickstart
from nudiff.cli import main
from nudiff.training.checkpoint import load_weights


def _train(run, *extra, resume=False) -> int:
    args = ["train", QUICKSTART, "--out", str(run), *sets(tiny_quickstart(*extra))]
    return main(args + (["--resume"] if resume else []))


def _distance(a: dict, b: dict) -> float:
    return sum(float((a[k].float() - b[k].float()).abs().sum()) for k in a)


def test_init_from_loads_weights_and_restarts_the_step_count(tmp_path, capsys):
    """A run initialised from another starts from its model and EMA weights (an lr of ~0 keeps
    them), at step 0 with a fresh optimiser, and resumes from its own checkpoints after; a
    different architecture is a one-line error naming the first mismatching tensor."""
    first, tuned, scratch = tmp_path / "first", tmp_path / "tuned", tmp_path / "scratch"
    assert _train(first, "train.steps=4") == 0
    frozen = ["train.steps=2", "train.lr=1e-30"]
    assert _train(tuned, *frozen, f"train.init_from={first}") == 0
    assert _train(scratch, *frozen) == 0
    source, got = load_weights(first, ema=False), load_weights(tuned, ema=False)
    assert got.keys() == source.keys()
    for key in source:
        assert torch.allclose(got[key].float(), source[key].float(), atol=1e-6), key
    ema_source, ema_tuned, ema_scratch = (load_weights(r) for r in (first, tuned, scratch))
    assert _distance(ema_tuned, ema_source) < 0.01 * _distance(ema_scratch, ema_source)
    steps = sorted(p.name for p in (tuned / "checkpoints").iterdir())
    assert steps[-1] == "step_000002"  # counted from 0, not from the source's 4
    assert _train(tuned, "train.steps=4", f"train.init_from={first}", resume=True) == 0
    assert sorted(p.name for p in (tuned / "checkpoints").iterdir())[-1] == "step_000004"
    wider = "model.unet={channels: 16, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: [1]}"
    capsys.readouterr()
    assert _train(tmp_path / "wider", wider, f"train.init_from={first}") != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"train.init_from: \S+: tensor \S+ has shape \(32, 32\) there", err), err
