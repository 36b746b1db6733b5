import pytest
import torch

from nudiff.bases import Haar
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.samplers import SAMPLERS, sample
from nudiff.schedules import MultiSpeed


@pytest.fixture(scope="module")
def problem():
    haar = Haar((1, 8, 8), 2)
    process = Process(haar, MultiSpeed(haar.level_map() - 1)).double()
    return process, GaussianOracle(process, field_model(haar.shape, basis=haar))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_oracle_sampling_matches_data_variance(problem, name):
    process, oracle = problem
    n = 3000
    # ancestral steps lose the posterior variance term: O(step) error, so it needs more steps
    steps = 1000 if name == "ancestral" else 200
    out = sample(oracle, process, n, sampler=name, steps=steps, seed=0, dtype=torch.float64)
    index, names = process.basis.groups()
    ratio = out.u.var(0) / oracle.w
    for g in range(len(names)):
        sel = ratio[index == g]
        # Monte-Carlo floor per group mean of sample variances: ~ sqrt(2 / (n * group size))
        floor = 4 * (2 / (n * sel.numel())) ** 0.5
        assert abs(sel.mean() - 1) < floor + 0.04, (name, names[g], sel.mean())
    per_step = 2 if name == "heun" else 1
    assert out.nfe == steps * per_step + 1


def test_batch_invariance_and_determinism(problem):
    process, oracle = problem
    a = sample(oracle, process, 6, sampler="ancestral", steps=20, seed=5, dtype=torch.float64)
    b = sample(oracle, process, 6, sampler="ancestral", steps=20, seed=5, dtype=torch.float64)
    c = sample(
        oracle, process, 2, sampler="ancestral", steps=20, seed=5, start=4, dtype=torch.float64
    )
    assert torch.equal(a.u, b.u)
    torch.testing.assert_close(a.u[4:], c.u)


def test_bad_arguments(problem):
    process, oracle = problem
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(oracle, process, 2, sampler="nope")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(oracle, process, 2, steps=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(oracle, process, 2, ts=torch.tensor([0.1, 0.5, 1.0]))
