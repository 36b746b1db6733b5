"""Noise schedules: scalar families and per-component (non-uniform) ones."""

from nudiff.schedules.base import ScalarSchedule, Schedule, as_times, vp_from_log_snr
from nudiff.schedules.blurring import BlurringDiffusion, dct_dissipation_rates
from nudiff.schedules.component import (
    MSF,
    BandWindows,
    MultiSpeed,
    PerComponent,
    PerComponentVP,
    Sequential,
    SoftConditioning,
    WindowedLogSNR,
)
from nudiff.schedules.scalar import EDM, VE, RectifiedFlow, VPCosine, VPLinear, resolution_shift

__all__ = [
    "EDM",
    "MSF",
    "VE",
    "BandWindows",
    "BlurringDiffusion",
    "MultiSpeed",
    "PerComponent",
    "PerComponentVP",
    "RectifiedFlow",
    "ScalarSchedule",
    "Schedule",
    "Sequential",
    "SoftConditioning",
    "VPCosine",
    "VPLinear",
    "WindowedLogSNR",
    "as_times",
    "dct_dissipation_rates",
    "resolution_shift",
    "vp_from_log_snr",
]
