"""Metrics: one module per metric; the public numeric functions are re-exported here."""

from .fid import fid_from_features, frechet_distance, kid_from_features
from .prdc import prdc

__all__ = ["fid_from_features", "frechet_distance", "kid_from_features", "prdc"]
