"""The samplers by name, and which of them draw noise along the way."""

from __future__ import annotations

from nudiff.samplers.exponential import (
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
)
from nudiff.samplers.ode import sample_dopri5, sample_euler, sample_heun
from nudiff.samplers.sde import sample_ancestral, sample_euler_maruyama, sample_pc
from nudiff.samplers.unipc import sample_unipc

SAMPLERS = {
    "ancestral": sample_ancestral,
    "euler-maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "euler": sample_euler,
    "heun": sample_heun,
    "dopri5": sample_dopri5,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "dpmpp-3m-sde": sample_dpmpp_3m_sde,
    "unipc": sample_unipc,
}
STOCHASTIC = {"ancestral", "euler-maruyama", "pc", "ddim", "dpmpp-2m-sde", "dpmpp-3m-sde"}
