"""Sample-quality evaluation: Frechet distances and KID on features of a local network."""

from nudiff.eval.features import (
    FeatureNet,
    extract_features,
    inception_features,
    load_feature_net,
    load_images_npz,
    save_feature_net,
    train_feature_net,
)
from nudiff.eval.frechet import frechet_distance, frechet_standard_error, gaussian_stats, kid

__all__ = [
    "FeatureNet",
    "extract_features",
    "frechet_distance",
    "frechet_standard_error",
    "gaussian_stats",
    "inception_features",
    "kid",
    "load_feature_net",
    "load_images_npz",
    "save_feature_net",
    "train_feature_net",
]
