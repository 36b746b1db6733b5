"""Denoiser backbones."""

from nudiff.models.unet import UNet

__all__ = ["UNet"]
