"""Orthonormal bases: identity, Haar, DCT, real Fourier, PCA."""

from nudiff.bases.base import Basis
from nudiff.bases.dct import DCT, Fourier
from nudiff.bases.haar import Haar
from nudiff.bases.identity import Identity
from nudiff.bases.pca import PCA

__all__ = ["Basis", "DCT", "Fourier", "Haar", "Identity", "PCA"]
