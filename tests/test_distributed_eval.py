"""``torchrun --nproc_per_node 2 nudiff sample | eval nll | eval fd`` on CPU (gloo): the ranks
share the work and rank 0 writes what one process writes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, sets, tiny_quickstart
from nudiff.cli import main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gloo on loopback")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("dist") / "run"
    overrides = sets(tiny_quickstart("data.holdout=8"))
    assert main(["train", "quickstart", "--out", str(run), "--device", "cpu", *overrides]) == 0
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "nudiff"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=240
    )
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_two_processes_sample_what_one_samples(tiny_run, tmp_path):
    common = [tiny_run, "--n-samples", 8, "--steps", 4, "--seed", 3, "--device", "cpu"]
    common += ["--sampler", "dpmpp-2m-sde", "--batch-size", 4]  # a stochastic sampler
    assert (
        main(
            [
                "sample",
                *map(str, common),
                "--out",
                str(tmp_path / "one.png"),
                "--npz",
                str(tmp_path / "one.npz"),
            ]
        )
        == 0
    )
    res = _torchrun("sample", *common, "--out", tmp_path / "two.png", "--npz", tmp_path / "two.npz")
    assert "on 2 processes" in res.stdout and res.stdout.count("8 samples,") == 1  # rank 0 prints
    one, two = np.load(tmp_path / "one.npz")["x_train"], np.load(tmp_path / "two.npz")["x_train"]
    assert one.shape == (8, 16, 16, 3) and np.array_equal(one, two)
    assert (tmp_path / "two.png").is_file()


def test_two_processes_score_the_nll_one_scores(tiny_run, tmp_path):
    common = [tiny_run, "--n-images", 6, "--batch-size", 2, "--method", "elbo", "--times", 4]
    common += ["--seed", 1, "--device", "cpu"]
    assert main(["eval", "nll", *map(str, common), "--json", str(tmp_path / "one.json")]) == 0
    _torchrun("eval", "nll", *common, "--json", tmp_path / "two.json")
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["n"] == one["n"] == 6 and two["nll_bpd"] == pytest.approx(one["nll_bpd"], rel=1e-12)
    assert two["stderr"] == pytest.approx(one["stderr"], rel=1e-9)


def test_two_processes_score_the_fd_one_scores(tiny_run, tmp_path):
    shapes, net = tmp_path / "shapes.npz", tmp_path / "net.safetensors"
    assert (
        main(
            [
                "data",
                "export",
                "quickstart",
                "--out",
                str(shapes),
                "--n-images",
                "64",
                "--set",
                "data.resolution=16",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "features",
                "train",
                "--data",
                str(shapes),
                "--out",
                str(net),
                "--train-steps",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    common = [tiny_run, "--ref", shapes, "--features", net, "--n-samples", 8, "--steps", 3]
    common += ["--device", "cpu"]
    assert main(["eval", "fd", *map(str, common), "--json", str(tmp_path / "one.json")]) == 0
    _torchrun("eval", "fd", *common, "--json", tmp_path / "two.json")
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["fd"] == pytest.approx(one["fd"], rel=1e-9) and two["kid"] == one["kid"]


def test_a_sample_count_that_does_not_split_is_a_one_line_error(tiny_run, tmp_path):
    res = _torchrun(
        "sample",
        tiny_run,
        "--n-samples",
        7,
        "--device",
        "cpu",
        "--out",
        tmp_path / "x.png",
        check=False,
    )
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if "nudiff sample: error" in line]
    assert lines and "7 items do not split evenly over 2 processes" in lines[0]
