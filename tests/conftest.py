import pytest
import torch

from nudiff.bases import DCT, Haar, Identity
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

torch.set_num_threads(2)

SHAPE = (1, 8, 8)


def schedule_cases(shape=SHAPE):
    """(name, basis, schedule) covering every schedule family."""
    haar = Haar(shape, 2 if shape[1] < 8 else 3)
    dct = DCT(shape)
    ident = Identity(shape)
    return [
        ("vp-cosine", dct, VPCosine()),
        ("vp-linear", dct, VPLinear()),
        ("ve", dct, VE(sigma_min=0.01, sigma_max=20.0)),
        ("edm", dct, EDM(sigma_min=0.01, sigma_max=20.0)),
        ("rectified-flow", dct, RectifiedFlow()),
        ("multispeed", haar, MultiSpeed(haar.level_map() - 1)),
        ("soft", dct, SoftConditioning(dct.label(), softness=0.5)),
        ("soft-clipped", dct, SoftConditioning(dct.label(), softness=0.5, clip=True)),
        ("sequential", ident, Sequential(ident.label("col"), overlap=0.25)),
    ]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def train_args(tmp_path, overrides) -> list[str]:
    """``nudiff train`` arguments for a config made only of ``--set`` overrides (a file holding
    just the data source, as ``nudiff train`` wants a config file)."""
    path = tmp_path / "tiny.yaml"
    path.write_text("data: {name: shapes}\n")
    return [str(path), *sum((["--set", s] for s in overrides), [])]
