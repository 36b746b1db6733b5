"""Sample-quality evaluation: Frechet distances and KID in the features of Inception-v3 (FID)
or of an offline feature network."""

from nudiff.eval.features import (
    FeatureNet,
    extract_features,
    load_feature_net,
    load_images_npz,
    save_feature_net,
    train_feature_net,
)
from nudiff.eval.frechet import frechet_distance, frechet_standard_error, gaussian_stats, kid
from nudiff.eval.inception import InceptionV3, inception_features

__all__ = [
    "FeatureNet",
    "InceptionV3",
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
