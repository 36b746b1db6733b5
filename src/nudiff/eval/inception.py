"""FID's feature space: the Inception-v3 pool3 features (2048-d) of the TF-ported weights.

The network, its input handling (uint8 RGB, resized to 299 x 299 with TensorFlow 1's bilinear
resize) and the weights format are torch-fidelity's (``pip install 'nudiff[fid]'``), so the
features are the ones torch-fidelity, pytorch-fid and clean-fid's legacy mode report FIDs in.
nudiff never downloads the weights: the file is given by path (``--inception-weights`` or
``$NUDIFF_INCEPTION_WEIGHTS``) and read without unpickling code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

INCEPTION_ENV = "NUDIFF_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)
FEATURE_DIM = 2048


def inception_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The weights file: ``weights``, else ``$NUDIFF_INCEPTION_WEIGHTS``; a one-line
    ``FileNotFoundError`` that says where to get it when neither names an existing file."""
    path = weights or os.environ.get(INCEPTION_ENV)
    where = (
        f"download {INCEPTION_URL} once (torch-fidelity's {INCEPTION_FILE}) and pass "
        f"--inception-weights FILE or set {INCEPTION_ENV}=FILE; nudiff never downloads it"
    )
    if not path:
        raise FileNotFoundError(f"FID needs the Inception-v3 weights file: {where}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"Inception-v3 weights file not found: {path} ({where})")
    return Path(path)


def _check_state(path: Path) -> None:
    """Refuse, in one line, a file that needs code to unpickle or is not an Inception-v3."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled code
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a weights file that loads without running code: {first[:200]}"
        ) from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (1008, FEATURE_DIM):
        raise ValueError(
            f"{path} is not the FID Inception-v3 (torch-fidelity's {INCEPTION_FILE}): it has no "
            f"fc.weight of shape (1008, {FEATURE_DIM})"
        )


class InceptionV3:
    """Inception-v3 pool3 features of images, as FID computes them.

    ``weights``: the weights file (see :func:`inception_weights_path`); ``device``: where the
    network runs. Call :meth:`features` on uint8 images.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device="cpu"):
        path = inception_weights_path(weights)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise ImportError(
                f"FID needs torch-fidelity and torchvision: pip install 'nudiff[fid]' ({err})"
            ) from None
        # torch-fidelity reads the file with weights_only=False: only a file that loads with
        # weights_only=True, i.e. holds tensors and nothing that runs code, gets that far
        _check_state(path)
        try:
            net = FeatureExtractorInceptionV3(
                "inception-v3-compat", [str(FEATURE_DIM)], feature_extractor_weights_path=str(path)
            )
        except RuntimeError as err:  # load_state_dict: missing or unexpected keys, shapes
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise ValueError(
                f"{path} does not fit the FID Inception-v3: {(lines[1:] or lines)[0][:200]}"
            ) from None
        self.path, self.device = path, torch.device(device)
        self.net = net.eval().to(self.device)

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 100) -> np.ndarray:
        """Features ``(N, 2048)`` float64 of images: a uint8 numpy array ``(N, H, W[, C])`` or a
        tensor ``(N, C, H, W)``, uint8 or float in ``[-1, 1]`` (rounded to uint8 first). Grey
        images are repeated to RGB, as torch-fidelity reads grey image files; any size is
        resized by the network."""
        from nudiff.data.transforms import float_to_uint8
        from nudiff.eval.features import _image_batches

        x = _image_batches(images)
        if x.shape[1] not in (1, 3):
            raise ValueError(f"Inception-v3 takes grey or RGB images, got {x.shape[1]} channels")
        out = []
        with torch.inference_mode():
            for xb in x.split(batch_size):
                xb = xb if xb.dtype == torch.uint8 else float_to_uint8(xb)
                xb = xb.expand(-1, 3, -1, -1) if xb.shape[1] == 1 else xb
                out.append(self.net(xb.to(self.device))[0].double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM))


def inception_features(
    images: np.ndarray | torch.Tensor,
    weights: str | os.PathLike | None = None,
    batch_size: int = 100,
    device="cpu",
) -> np.ndarray:
    """:meth:`InceptionV3.features` of ``images`` with a network loaded for this call."""
    return InceptionV3(weights, device).features(images, batch_size)
