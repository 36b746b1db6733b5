"""Noise schedules: scalar families and per-component (non-uniform) ones."""

from nudiff.schedules.base import ScalarSchedule, Schedule, as_times, vp_from_log_snr
from nudiff.schedules.component import (
    MSF,
    BandWindows,
    MultiSpeed,
    PerComponentVP,
    Sequential,
    SoftConditioning,
    WindowedLogSNR,
)
from nudiff.schedules.scalar import EDM, VE, RectifiedFlow, VPCosine, VPLinear

__all__ = [
    "EDM",
    "MSF",
    "VE",
    "BandWindows",
    "MultiSpeed",
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
    "vp_from_log_snr",
]
