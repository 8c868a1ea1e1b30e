"""Scorers on arrays: samples against held-out images, in a domain feature net and in pixels."""

from lsdm_jax.metrics.classifier import FeatureNet, load_or_train_classifier, train_classifier
from lsdm_jax.metrics.diversity import diversity_ratio, within_class_diversity
from lsdm_jax.metrics.fid import frechet_distance, gaussian_stats
from lsdm_jax.metrics.image import consistency, psnr, ssim
from lsdm_jax.metrics.precision_recall import PrecisionRecall, precision_recall
from lsdm_jax.metrics.scores import (
  evaluate_attributes,
  evaluate_classcond,
  evaluate_superres,
  pixel_features,
  projected_pixel_features,
)

__all__ = [
  "FeatureNet",
  "PrecisionRecall",
  "consistency",
  "diversity_ratio",
  "evaluate_attributes",
  "evaluate_classcond",
  "evaluate_superres",
  "frechet_distance",
  "gaussian_stats",
  "load_or_train_classifier",
  "pixel_features",
  "precision_recall",
  "projected_pixel_features",
  "psnr",
  "ssim",
  "train_classifier",
  "within_class_diversity",
]
