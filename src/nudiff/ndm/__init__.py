"""Neural Diffusion Models (Bartosh et al. 2023): a learned time-dependent transform ``F(x, t)``
inside the linear process, ``z_t = alpha(t) F(x, t) + sigma(t) eps`` per component. See
``docs/ndm.md``."""

from nudiff.ndm.model import NDM
from nudiff.ndm.transform import (
    TRANSFORMS,
    IdentityTransform,
    LearnedTransform,
    transform_of,
)

__all__ = ["NDM", "TRANSFORMS", "IdentityTransform", "LearnedTransform", "transform_of"]
