"""nudiff: non-uniform diffusion models.

One linear diffusion ``u_t = alpha_i(t) u_0 + sigma_i(t) eps`` acting on the whitened components
``u = (B(x) - mu) / s`` of the data in an orthonormal basis ``B``, with a schedule per component.

The front door (:mod:`nudiff.api`)::

    run = nudiff.load("runs/quickstart")
    images = run.sample(16, steps=20, seed=0)
    run.save_grid(images, "grid.png")

Importing ``nudiff`` loads nothing heavy; the names below import torch when first used.
"""

__version__ = "0.1.0"

_API = {
    "load": "nudiff.api",
    "train": "nudiff.api",
    "Run": "nudiff.api",
    "to_pil": "nudiff.api",
    "save_grid": "nudiff.api",
    "save_npz": "nudiff.api",
    "load_config": "nudiff.config",
    "config_names": "nudiff.config_files",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'nudiff' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
