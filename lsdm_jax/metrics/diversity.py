"""Within-class diversity: how spread out the samples of each class are, in features.

A generator that collapses each class to a few images scores near 0; real data scores its
own spread, so `diversity_ratio` ≈ 1 means real-like variety within classes.
"""

from __future__ import annotations

import numpy as np

from lsdm_jax.errors import DataError

DEFAULT_MAX_PER_CLASS = 2000


def mean_pairwise_distance(feats: np.ndarray, block: int = 512) -> float:
  """Mean Euclidean distance over all unordered pairs i != j of (n, D) features, n >= 2,
  computed in float64, `block` rows at a time."""
  feats = np.asarray(feats, np.float64)
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
    out[int(c)] = mean_pairwise_distance(feats[rows])
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


def _pairwise_rms(a: np.ndarray) -> np.ndarray:
  """(N, n) images of n per input → (N,) mean RMS pixel distance over pairs within each row."""
  flat = a.reshape(a.shape[0], a.shape[1], -1).astype(np.float64)
  n, dim = flat.shape[1], flat.shape[2]
  sq = (flat * flat).sum(-1)
  d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.einsum("bid,bjd->bij", flat, flat)
  d = np.sqrt(np.maximum(d2, 0.0) / dim)
  return d.sum((1, 2)) / (n * (n - 1))


def superres_spread(
  samples: np.ndarray,
  inputs: np.ndarray,
  train_images: np.ndarray,
  train_inputs: np.ndarray,
  *,
  too_sure: float = 0.5,
) -> dict[str, np.ndarray | float]:
  """How varied the samples for one low-resolution input are, against real variety.

  Model spread of input i: the mean RMS pixel distance between its n samples. Real
  spread: the same over the n train images whose low-resolution versions are nearest to
  input i (squared error), the closest thing to draws of y given that x the data hold.

  Args:
    samples: (N, n, H, W, C) n >= 2 samples per input, in [0, 1].
    inputs: (N, h, w, C) the inputs.
    train_images: (M, H, W, C) high-resolution train images, M >= n.
    train_inputs: (M, h, w, C) their low-resolution versions.
    too_sure: an input counts as too sure when its model spread is below this share of
      its real spread.

  Returns:
    {'spread', 'spread_real', 'spread_ratio' (means over inputs, and mean spread over
    mean real spread), 'spread_too_sure' (share of inputs), 'per_input', 'per_input_real'
    (N,), 'neighbours' (N, n) rows of train_images}.
  """
  samples = np.asarray(samples, np.float32)
  if samples.ndim != 5 or samples.shape[1] < 2:
    raise DataError(f"need (N, n >= 2, H, W, C) samples, got {samples.shape}")
  n = samples.shape[1]
  if len(train_images) < n:
    raise DataError(f"need at least {n} train images for the real spread")
  q = np.asarray(inputs, np.float32).reshape(len(inputs), -1)
  t = np.asarray(train_inputs, np.float32).reshape(len(train_inputs), -1)
  d2 = (q * q).sum(1)[:, None] + (t * t).sum(1)[None] - 2.0 * q @ t.T
  neighbours = np.argsort(d2, axis=1)[:, :n]
  model = _pairwise_rms(samples)
  real = _pairwise_rms(np.asarray(train_images, np.float32)[neighbours])
  return {
    "spread": float(model.mean()),
    "spread_real": float(real.mean()),
    "spread_ratio": float(model.mean() / max(real.mean(), 1e-12)),
    "spread_too_sure": float(np.mean(model < too_sure * real)),
    "per_input": model,
    "per_input_real": real,
    "neighbours": neighbours,
  }
