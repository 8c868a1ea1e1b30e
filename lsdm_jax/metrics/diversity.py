"""Within-class diversity: how spread out the samples of each class are, in features.

A generator that collapses each class to a few images scores near 0; real data scores its
own spread, so `diversity_ratio` ≈ 1 means real-like variety within classes.
"""

from __future__ import annotations

import numpy as np

from lsdm_jax.errors import DataError

DEFAULT_MAX_PER_CLASS = 2000


def _mean_pairwise_distance(feats: np.ndarray, block: int = 512) -> float:
  """Mean Euclidean distance over all unordered pairs i != j of (n, D) features, n >= 2."""
  n = feats.shape[0]
  sq = (feats * feats).sum(axis=1)
  total = 0.0
  for start in range(0, n, block):
    a = feats[start : start + block]
    d2 = (a * a).sum(axis=1)[:, None] + sq[None, :] - 2.0 * (a @ feats.T)
    total += np.sqrt(np.maximum(d2, 0.0)).sum()
  # The diagonal is ~0 (round-off is clipped), so the full sum counts each pair twice.
  return float(total / (n * (n - 1)))


def per_class_diversity(
  feats: np.ndarray,
  labels: np.ndarray,
  *,
  max_per_class: int = DEFAULT_MAX_PER_CLASS,
  seed: int = 0,
) -> dict[int, float]:
  """Mean pairwise feature distance within each class that has at least two samples.

  Args:
    feats: (N, D) features.
    labels: (N,) int class of each row.
    max_per_class: larger classes are subsampled (seeded) to bound the O(n^2) cost.
    seed: seeds that subsampling.

  Returns:
    {class: mean pairwise Euclidean distance}.
  """
  feats = np.asarray(feats, np.float64)
  labels = np.asarray(labels)
  if feats.ndim != 2 or labels.shape != (feats.shape[0],):
    raise ValueError(f"need (N, D) features and (N,) labels, got {feats.shape}, {labels.shape}")
  rng = np.random.default_rng(seed)
  out = {}
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    if len(rows) < 2:
      continue
    if len(rows) > max_per_class:
      rows = rng.choice(rows, max_per_class, replace=False)
    out[int(c)] = _mean_pairwise_distance(feats[rows])
  return out


def within_class_diversity(feats: np.ndarray, labels: np.ndarray, **kwargs) -> float:
  """Mean pairwise Euclidean feature distance within a class, averaged over classes.

  Args:
    feats: (N, D) features.
    labels: (N,) int classes; classes with fewer than two samples are skipped.
    **kwargs: `max_per_class`, `seed` of `per_class_diversity`.

  Returns:
    The average over classes, a Python float.
  """
  per_class = per_class_diversity(feats, labels, **kwargs)
  if not per_class:
    raise DataError("within-class diversity needs at least two samples of some class")
  return float(np.mean(list(per_class.values())))


def diversity_ratio(
  gen_feats: np.ndarray,
  gen_labels: np.ndarray,
  real_feats: np.ndarray,
  real_labels: np.ndarray,
  **kwargs,
) -> float:
  """Within-class diversity of generated samples over that of real ones, on shared classes.

  Args:
    gen_feats: (N, D) features of generated images.
    gen_labels: (N,) the class each was generated for.
    real_feats: (M, D) features of real images.
    real_labels: (M,) their true classes.
    **kwargs: `max_per_class`, `seed` of `per_class_diversity`.

  Returns:
    mean_c div_gen(c) / mean_c div_real(c), over classes with >= 2 samples in both sets.
  """
  gen = per_class_diversity(gen_feats, gen_labels, **kwargs)
  real = per_class_diversity(real_feats, real_labels, **kwargs)
  shared = sorted(set(gen) & set(real))
  if not shared:
    raise DataError(
      "diversity ratio needs a class with at least two generated and two real samples; "
      "generate more samples per class"
    )
  return float(np.mean([gen[c] for c in shared]) / np.mean([real[c] for c in shared]))
