import math

import pytest
import torch

from conftest import schedule_cases
from nudiff.bases import DCT, Haar, Identity
from nudiff.process import Process
from nudiff.schedules import (
    EDM,
    VE,
    MultiSpeed,
    RectifiedFlow,
    Sequential,
    SoftConditioning,
    VPCosine,
    VPLinear,
)

CASES = schedule_cases()
IDS = [c[0] for c in CASES]
TIMES = torch.tensor([0.013, 0.21, 0.38, 0.53, 0.77, 0.96], dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_derivatives_match_finite_differences(case):
    _, _, schedule = case
    a, s = schedule.alpha_sigma(TIMES)
    da, ds = schedule.derivatives(TIMES)
    assert a.shape == da.shape and s.shape == ds.shape and a.shape[0] == len(TIMES)
    h = 1e-6
    ap, sp = schedule.alpha_sigma(TIMES + h)
    am, sm = schedule.alpha_sigma(TIMES - h)
    torch.testing.assert_close(da, (ap - am) / (2 * h), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ds, (sp - sm) / (2 * h), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_snr_decreases_and_float32_works(case):
    _, _, schedule = case
    lam = schedule.log_snr(TIMES)
    assert (lam[1:] <= lam[:-1] + 1e-12).all()
    a32, s32 = schedule.alpha_sigma(TIMES.float())
    assert a32.dtype == torch.float32 and torch.isfinite(a32).all() and torch.isfinite(s32).all()


@pytest.mark.parametrize(
    "schedule",
    [VPCosine(), VPLinear(), VE(), EDM(), RectifiedFlow()],
    ids=lambda s: type(s).__name__,
)
def test_closed_form_inverse(schedule):
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    torch.testing.assert_close(schedule.t_from_log_snr(schedule.log_snr(t).flatten()), t)


@pytest.mark.parametrize("schedule", [VPCosine(), VPLinear()], ids=["cos", "linear"])
def test_vp_preserves_variance(schedule):
    a, s = schedule.alpha_sigma(TIMES)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))


def test_vp_cosine_hits_its_log_snr_limits():
    s = VPCosine(-12.0, 9.0)
    lam = s.log_snr(torch.tensor([0.0, 1.0], dtype=torch.float64)).flatten()
    torch.testing.assert_close(lam, torch.tensor([9.0, -12.0], dtype=torch.float64))


def test_multispeed_bands_fully_noised_after_finishing_time():
    haar = Haar((1, 16, 16), 3)
    band = haar.level_map() - 1
    schedule = MultiSpeed(band)  # T_k = 1/4, 1/2, 3/4, 1
    process = Process(haar, schedule)
    t = torch.linspace(0.01, 1.0, 40, dtype=torch.float64)
    finish = torch.tensor(schedule.finishing_times, dtype=torch.float64)[band]
    lam = schedule.log_snr(t)
    after = t.view(-1, 1, 1, 1) >= finish
    assert torch.allclose(lam[after], torch.tensor(-10.0, dtype=torch.float64))
    assert (lam[~after] > -10 + 1e-6).all()
    # linear from +10 at t = 0 to -10 at T_k: the finest band at t = 0.01 is at 10 - 20 * 0.04
    assert torch.allclose(lam[0][band == 0], torch.tensor(9.2, dtype=torch.float64))
    mask = process.inactive(t)
    assert torch.equal(mask, after)
    # frozen: no drift and no diffusion once inactive
    f, g2 = process.sde(t)
    assert (f[after] == 0).all() and (g2[after] == 0).all()
    # over a step, the least-noised end decides
    step = process.inactive(torch.tensor([0.6]), torch.tensor([0.45]))
    assert torch.equal(step[0], (finish <= 0.45))


def test_multispeed_errors():
    band = Haar((1, 8, 8), 2).level_map() - 1
    with pytest.raises(ValueError, match="finishing_times must be increasing"):
        MultiSpeed(band, [0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match=r"finishing_times must lie in \(0, 1\]"):
        MultiSpeed(band, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"finishing_times must lie in \(0, 1\]"):
        MultiSpeed(band, [0.3, 0.6, 1.2])
    with pytest.raises(ValueError, match="one entry per band"):
        MultiSpeed(band, [0.5, 1.0])


def test_soft_conditioning_large_softness_is_uniform():
    labels = DCT((1, 8, 8)).label()
    for softness in (math.inf, 1e7):
        s = SoftConditioning(labels, softness=softness, g_denoise=-8, g_noise=6)
        lam = s.log_snr(TIMES)
        expected = -(-8 + TIMES * 14).view(-1, 1, 1, 1).expand_as(lam)
        torch.testing.assert_close(lam, expected, atol=1e-5, rtol=0)


def test_soft_conditioning_small_softness_gives_disjoint_ordered_windows():
    labels = torch.arange(6, dtype=torch.float64).view(1, 2, 3)
    wide = SoftConditioning(labels, softness=10.0)
    enter, leave = wide.active_window()
    assert (enter[0, 0, 0] < leave[0, 1, 2]) and (enter[0, 1, 2] < leave[0, 0, 0])  # overlap
    narrow = SoftConditioning(labels, softness=1e-3)
    enter, leave = (w.flatten() for w in narrow.active_window())
    # larger label -> noised first; windows no longer overlap
    order = torch.argsort(enter)
    assert order.tolist() == [5, 4, 3, 2, 1, 0]
    assert (leave[order[:-1]] <= enter[order[1:]]).all()
    assert (leave - enter).max() < 0.03
    # each component is clean before and pure noise after its window
    t = torch.tensor([0.5], dtype=torch.float64)
    lam = narrow.log_snr(t).flatten()
    assert (lam[enter > 0.5] > 10).all() and (lam[leave < 0.5] < -10).all()


def test_soft_conditioning_clipped_variant_freezes_outside_window():
    labels = torch.arange(4, dtype=torch.float64).view(1, 2, 2)
    s = SoftConditioning(labels, softness=0.1, clip=True)
    lam = s.log_snr(TIMES)
    assert lam.max() <= 10 + 1e-12 and lam.min() >= -10 - 1e-12
    process = Process(Identity((1, 2, 2)), s)
    inactive = process.inactive(TIMES)
    torch.testing.assert_close(inactive, lam <= -10 + 1e-5)


def test_soft_conditioning_errors():
    labels = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="softness must be > 0"):
        SoftConditioning(labels, softness=-1.0)
    with pytest.raises(ValueError, match="softness must be > 0"):
        SoftConditioning(labels, softness=0.0)
    with pytest.raises(ValueError, match="labels must be"):
        SoftConditioning(torch.zeros(4), softness=1.0)


def test_sequential_columns():
    ident = Identity((1, 4, 4))
    s = Sequential(ident.label("col"))
    start, end = s.windows()
    # the last column is noised first, the first column last; windows tile [0, 1]
    torch.testing.assert_close(
        start[0, 0],
        torch.full((4,), 0.0, dtype=torch.float64).add(
            torch.tensor([0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
        ),
    )
    assert torch.allclose(end - start, torch.tensor(0.25, dtype=torch.float64))
    overlapping = Sequential(ident.label("col"), overlap=0.5)
    start, end = overlapping.windows()
    assert end.max() == 1.0 and start.min() == 0.0
    with pytest.raises(ValueError, match="overlap must be in"):
        Sequential(ident.label("col"), overlap=1.0)
