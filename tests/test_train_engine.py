"""The generic training engine on a toy model: outputs, exact resume, checkpoint integrity,
NaN handling, DDP equivalence, config errors."""

import csv
import hashlib
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from nudiff.training import (
    CheckpointError,
    TrainConfig,
    Trainer,
    latest_valid_checkpoint,
    load_checkpoint,
    load_weights,
)
from nudiff.training.checkpoint import list_checkpoints, verify_checkpoint
from nudiff.training.ema import EMA, ema_beta
from train_worker import (
    SID_TINY,
    ToyData,
    ToyLoss,
    ToyModel,
    config,
    flip,
    lego_config,
    make_trainer,
    multiscale_config,
)

torch.set_num_threads(1)
WORKER = Path(__file__).with_name("train_worker.py")


def _env():
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join([src, str(WORKER.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _csv(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_end_to_end_outputs(tmp_path):
    calls = []

    def sample_fn(model, n, generator):
        calls.append(model.training)
        return torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1

    cfg = config(steps=6, sample_every=3, sample_n=4, tensorboard=True, log_every=2)
    torch.manual_seed(0)
    tr = Trainer(
        ToyModel(),
        ToyLoss(),
        ToyData(labels=True),
        cfg,
        tmp_path,
        sample_fn=sample_fn,
        resolved_config={"train": cfg.model_dump(mode="json"), "note": "x"},
    )
    out = tr.fit()
    assert out["steps"] == 6 and out["stopped"] == "completed" and out["images_per_s"] > 0
    assert [s for s, _ in out["losses"]] == list(range(1, 7))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]  # keep_checkpoints=2
    ck = tmp_path / "checkpoints" / "step_000006"
    assert json.loads((ck / "manifest.json").read_text())["files"].keys() == {
        "model.safetensors",
        "ema.safetensors",
        "state.pt",
        "config.yaml",
    }
    loaded = load_checkpoint(ck)
    assert loaded.step == 6 and loaded.config["note"] == "x" and "scale" in loaded.model
    _assert_same_state(loaded.ema, tr.ema.state_dict())
    _assert_same_state(load_weights(tmp_path), tr.ema.state_dict())
    _assert_same_state(load_weights(ck, ema=False), tr.model.state_dict())
    assert [int(r["step"]) for r in _csv(tmp_path)] == [2, 4, 6]
    assert (tmp_path / "loss.png").stat().st_size > 0 and any((tmp_path / "tb").iterdir())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_000003.png",
        "step_000006.png",
    ]
    assert calls == [False, False]  # the EMA model, in eval mode


def test_exact_resume(tmp_path):
    kw = dict(dropout=0.2, steps=6, checkpoint_every=2)
    a = make_trainer(tmp_path / "a", num_workers=2, **kw)
    a.augment = flip
    out_a = a.fit()
    b = make_trainer(tmp_path / "b", **{**kw, "steps": 3})
    b.augment = flip
    out_b1 = b.fit()
    b = make_trainer(tmp_path / "b", **kw)  # fresh objects, fresh weights, resumed from disk
    b.augment = flip
    out_b2 = b.fit(resume=True)
    assert out_b1["losses"] + out_b2["losses"] == out_a["losses"]
    assert [r["loss"] for r in _csv(tmp_path / "b")] == [r["loss"] for r in _csv(tmp_path / "a")]
    _assert_same_state(b.model.state_dict(), a.model.state_dict())
    _assert_same_state(b.ema.state_dict(), a.ema.state_dict())
    _assert_same_state(load_weights(tmp_path / "b"), load_weights(tmp_path / "a"))


def test_cosine_lr_schedule_and_its_exact_resume_after_a_crash(tmp_path):
    from nudiff.training.trainer import lr_factor

    cfg = config(steps=10, warmup_steps=2, lr_schedule="cosine")
    got = [lr_factor(cfg, s) for s in range(11)]
    # warm-up 1/2, 2/2, then cos from 1 at step 2 to 0 at step 10 = train.steps
    want = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    assert got == pytest.approx(want, abs=1e-12)
    assert [lr_factor(config(steps=10, warmup_steps=2), s) for s in range(4)] == [0.5, 1, 1, 1]

    kw = dict(steps=6, checkpoint_every=2, keep_checkpoints=3, lr_schedule="cosine")
    a = make_trainer(tmp_path / "a", **kw)
    out_a = a.fit()
    b = make_trainer(tmp_path / "b", **kw)
    calls = []

    def crash_before_step_5(x, generator):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return x

    b.augment = crash_before_step_5
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    b = make_trainer(tmp_path / "b", **kw)  # fresh objects, resumed from the step-4 checkpoint
    out_b = b.fit(resume=True)
    assert out_b["losses"] == out_a["losses"][4:]
    assert b.scheduler.get_last_lr() == a.scheduler.get_last_lr() == [0.0]
    _assert_same_state(b.model.state_dict(), a.model.state_dict())
    _assert_same_state(b.ema.state_dict(), a.ema.state_dict())


def test_fresh_run_refuses_existing_checkpoints_and_resume_without_any_starts_fresh(tmp_path):
    make_trainer(tmp_path / "r", steps=2).fit()
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(tmp_path / "r", steps=2).fit()
    assert make_trainer(tmp_path / "new", steps=2).fit(resume=True)["steps"] == 2


@pytest.mark.parametrize("damage", ["truncate", "no-manifest"])
def test_invalid_checkpoint_is_skipped(tmp_path, damage):
    ref = make_trainer(tmp_path / "ref", steps=4).fit()
    run = tmp_path / "ref"
    newest = run / "checkpoints" / "step_000004"
    if damage == "truncate":
        f = newest / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-100])
    else:
        (newest / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="step_000004"):
        assert latest_valid_checkpoint(run).name == "step_000002"
    with pytest.warns(UserWarning, match="skipping invalid checkpoint"):
        out = make_trainer(run, steps=4).fit(resume=True)
    assert out["losses"] == ref["losses"][2:]  # resumed from step 2, same losses again
    verify_checkpoint(newest)  # rewritten in place


def test_state_is_loaded_with_weights_only(tmp_path):
    make_trainer(tmp_path, steps=2).fit()
    ck = tmp_path / "checkpoints" / "step_000002"
    marker = tmp_path / "pwned"
    (ck / "state.pt").write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
    with pytest.raises(CheckpointError, match="state.pt"):  # size or hash
        load_checkpoint(ck)
    manifest = json.loads((ck / "manifest.json").read_text())  # a forger would fix the hash
    data = (ck / "state.pt").read_bytes()
    manifest["files"]["state.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ck / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError):
        make_trainer(tmp_path, steps=4).fit(resume=True)
    assert not marker.exists()


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class NaNAtStep3(ToyLoss):
    calls = 0

    def __call__(self, model, x0, noise):
        self.calls += 1
        out = super().__call__(model, x0, noise)
        return out * float("nan") if self.calls == 3 else out


def test_nan_loss_stops_without_checkpoint(tmp_path):
    torch.manual_seed(0)
    tr = Trainer(ToyModel(), NaNAtStep3(), ToyData(), config(steps=8, log_every=10), tmp_path)
    with pytest.raises(FloatingPointError, match="at step 3"):
        tr.fit()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    ck = load_checkpoint(latest_valid_checkpoint(tmp_path))
    assert ck.step == 2 and all(v.isfinite().all() for v in ck.model.values())


def test_sigkill_during_checkpoint_write_leaves_only_correct_checkpoints(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "slow-save", str(tmp_path)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while not (tmp_path / "saving_4").exists():  # the second save has begun
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the worker never reached its second checkpoint"
            time.sleep(0.05)
        time.sleep(0.5)  # two of five files written
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert any(p.name.startswith(".tmp-") for p in (tmp_path / "checkpoints").iterdir())
    for step, path in list_checkpoints(tmp_path):
        expected = torch.load(tmp_path / f"expected_{step}.pt", weights_only=True)
        ck = load_checkpoint(path)
        _assert_same_state(ck.model, expected["model"])
        _assert_same_state(ck.ema, expected["ema"])
    assert latest_valid_checkpoint(tmp_path).name == "step_000002"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(mode: str, out: Path, timeout: int) -> None:
    """Run ``train_worker.py MODE OUT`` in 2 CPU processes under torchrun."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        mode,
        str(out),
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]


def test_ddp_two_processes_match_one(tmp_path):
    _torchrun("ddp", tmp_path / "ddp", timeout=120)
    for accum in (1, 2):
        one = make_trainer(tmp_path / f"one{accum}", steps=3, grad_accum=accum)
        one.fit()
        two = tmp_path / "ddp" / f"accum{accum}"
        assert load_checkpoint(latest_valid_checkpoint(two)).state["world_size"] == 2
        for ema in (False, True):
            got, want = load_weights(two, ema=ema), load_weights(tmp_path / f"one{accum}", ema=ema)
            for k in want:
                torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)
        assert [float(r["loss"]) for r in _csv(two)] == pytest.approx(
            [float(r["loss"]) for r in _csv(tmp_path / f"one{accum}")], rel=1e-5
        )


def test_ddp_multiscale_model_matches_one_process(tmp_path):
    """Each step trains one scale's network: under DDP the others have no gradient on every
    rank (find_unused_parameters), and 2 processes still compute what one computes."""
    from nudiff.run import train

    _torchrun("ddp-multiscale", tmp_path / "two", timeout=180)
    train(multiscale_config(), tmp_path / "one")
    state = load_checkpoint(latest_valid_checkpoint(tmp_path / "two")).state
    assert state["world_size"] == 2 and state["ema_updates"] == [1] * len(state["ema_updates"])
    for ema in (False, True):
        got, want = load_weights(tmp_path / "two", ema=ema), load_weights(tmp_path / "one", ema=ema)
        assert any(k.startswith("scales.2.") for k in want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)


def test_ddp_lego_model_matches_one_process(tmp_path):
    """LEGO's joint loss (every brick a denoiser) with class labels and label dropout under DDP:
    2 processes compute what one does."""
    from nudiff.run import train

    _torchrun("ddp-lego", tmp_path / "two", timeout=180)
    train(lego_config(), tmp_path / "one")
    assert load_checkpoint(latest_valid_checkpoint(tmp_path / "two")).state["world_size"] == 2
    for ema in (False, True):
        got, want = load_weights(tmp_path / "two", ema=ema), load_weights(tmp_path / "one", ema=ema)
        assert any(k.startswith("backbone.bricks.1.") for k in want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)


def test_config_errors_are_one_line_and_name_the_field(tmp_path):
    for kw, field in [
        ({"batch_size": 0}, "batch_size"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"stepz": 3}, "stepz"),
    ]:
        with pytest.raises(ValidationError) as e:
            TrainConfig(**kw)
        (err,) = e.value.errors()
        assert err["loc"] == (field,) and "\n" not in err["msg"]
    with pytest.raises(ValueError, match=r"^train\.batch_size=10 .*train\.grad_accum") as e:
        make_trainer(tmp_path, batch_size=10, grad_accum=4)
    assert "\n" not in str(e.value)


def test_mixed_precision_no_survives_yaml():
    from nudiff.config import load_config

    assert load_config("quickstart", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        load_config("quickstart", ["train.mixed_precision=yes"])  # true is not a precision


def test_ema_half_life_and_state():
    assert ema_beta(8, 0, 40, 0.5) == 0.0  # ramp-up: the first step copies the model
    assert ema_beta(8, 10**6, 40, 0.5) == pytest.approx(0.5 ** (8 / 40))
    assert ema_beta(8, 0, 40, None) == pytest.approx(0.5 ** (8 / 40))
    model = ToyModel()
    ema = EMA(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.module.parameters()]
    ema.update(0.75)
    for e, b, p in zip(ema.module.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.75 * b + 0.25 * p)
    assert ema.module.scale is model.scale  # buffers follow the model
    other = EMA(ToyModel())
    other.load_state_dict(ema.state_dict())
    _assert_same_state(other.state_dict(), ema.state_dict())


def test_keep_checkpoints_and_cleanup_of_killed_writes(tmp_path):
    (tmp_path / "checkpoints" / ".tmp-step_000001-abc").mkdir(parents=True)
    make_trainer(tmp_path, steps=8, keep_checkpoints=3).fit()
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == [
        "step_000004",
        "step_000006",
        "step_000008",
    ]
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nothing")


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    out = make_trainer(tmp_path, steps=1000, max_minutes=1e-6, checkpoint_every=500).fit()
    assert out["stopped"] == "time limit" and out["steps"] < 1000
    assert load_checkpoint(latest_valid_checkpoint(tmp_path)).step == out["steps"]


def test_ddp_sid_distillation_matches_one_process(tmp_path):
    """SiD (two phases, two optimisers, no data) of a multi-scale teacher under DDP: 2
    processes compute what one does."""
    from nudiff.distill.run import distill, distill_config
    from nudiff.run import train

    train(multiscale_config(), tmp_path / "teacher")
    _torchrun("ddp-sid", tmp_path / "two", timeout=180)
    distill(distill_config(tmp_path / "teacher", SID_TINY), tmp_path / "one")
    assert load_checkpoint(latest_valid_checkpoint(tmp_path / "two")).state["world_size"] == 2
    for ema in (False, True):
        got, want = load_weights(tmp_path / "two", ema=ema), load_weights(tmp_path / "one", ema=ema)
        assert any(k.startswith("generator.") for k in want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)
