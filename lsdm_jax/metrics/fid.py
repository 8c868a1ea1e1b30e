"""Fréchet distance between Gaussians fitted to two feature sets (FID in a domain net).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b),

with tr sqrt(S_a S_b) = sum_i sqrt(lambda_i(sqrt(S_a) S_b sqrt(S_a))): the middle matrix is
symmetric positive semi-definite, so two symmetric eigendecompositions (float64) replace the
non-symmetric `scipy.linalg.sqrtm` and its complex round-off.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of a feature set.

  Args:
    feats: (N, D) features, N >= 2.

  Returns:
    mu (D,) and the unbiased covariance sigma (D, D), both float64.
  """
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"gaussian_stats needs (N >= 2, D) features, got shape {feats.shape}")
  return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], -1)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a PSD matrix; round-off negative eigenvalues are clipped."""
  evals, evecs = np.linalg.eigh((sigma + sigma.T) / 2)
  return (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T


def frechet_distance_from_stats(
  mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
  """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

  Args:
    mu_a, mu_b: (D,) means.
    sigma_a, sigma_b: (D, D) covariances (symmetric positive semi-definite).

  Returns:
    The squared 2-Wasserstein distance between the Gaussians, >= 0, as a Python float.
  """
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
  if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
    raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
  root_a = _psd_sqrt(sigma_a)
  middle = root_a @ sigma_b @ root_a
  evals = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_covmean = np.sqrt(np.clip(evals, 0.0, None)).sum()
  diff = mu_a - mu_b
  fd = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean
  return float(max(fd, 0.0))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets.

  The estimate is biased upwards by finite samples (more for fewer points), so compare
  values computed from the same numbers of points.

  Args:
    feats_a: (N, D) features.
    feats_b: (M, D) features.

  Returns:
    FD >= 0 as a Python float (float64 arithmetic).
  """
  return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))
