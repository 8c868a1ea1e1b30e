"""Improved precision and recall (Kynkäänniemi et al., 2019) in a feature space.

Each set's manifold is the union of balls around its points whose radius is the distance to
the point's k-th nearest neighbour within the set. Precision is the fraction of fake points
inside the real manifold (fidelity); recall the fraction of real points inside the fake
manifold (coverage). Distances are computed in row blocks, so 10k x 10k sets need only
`block * N * 8` bytes at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFAULT_BLOCK = 512


class PrecisionRecall(NamedTuple):
  precision: float
  recall: float


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
  """(n, D), (m, D) → (n, m) squared Euclidean distances, clipped at 0 against round-off."""
  d = (a * a).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d, 0.0)


def knn_radii(feats: np.ndarray, k: int = 3, block: int = DEFAULT_BLOCK) -> np.ndarray:
  """Distance from each point to its k-th nearest neighbour in the same set (self excluded).

  Args:
    feats: (N, D) features, N > k.
    k: which neighbour.
    block: rows per distance block.

  Returns:
    (N,) float64 radii.
  """
  feats = np.asarray(feats, np.float64)
  n = feats.shape[0]
  if not 1 <= k < n:
    raise ValueError(f"knn_radii needs 1 <= k < N, got k={k} for N={n} points")
  sq = (feats * feats).sum(axis=1)
  radii = np.empty(n)
  for start in range(0, n, block):
    d = _sq_dists(feats[start : start + block], feats, sq)
    # Column 0 of the partition is the point itself (distance 0), so the k-th neighbour
    # is at index k.
    radii[start : start + block] = np.partition(d, k, axis=1)[:, k]
  return np.sqrt(radii)


def manifold_coverage(
  queries: np.ndarray,
  support: np.ndarray,
  support_radii: np.ndarray,
  block: int = DEFAULT_BLOCK,
) -> float:
  """Fraction of `queries` within `support_radii[j]` of some support point j.

  Args:
    queries: (N, D) points to test.
    support: (M, D) points spanning the manifold.
    support_radii: (M,) their k-NN radii.
    block: query rows per distance block.

  Returns:
    The fraction in [0, 1].
  """
  queries = np.asarray(queries, np.float64)
  support = np.asarray(support, np.float64)
  sq = (support * support).sum(axis=1)
  r2 = np.asarray(support_radii, np.float64) ** 2
  inside = 0
  for start in range(0, queries.shape[0], block):
    d = _sq_dists(queries[start : start + block], support, sq)
    inside += int(np.any(d <= r2[None, :], axis=1).sum())
  return inside / queries.shape[0]


def precision_recall(
  real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3, block: int = DEFAULT_BLOCK
) -> PrecisionRecall:
  """Improved precision and recall of `fake_feats` against `real_feats`.

  The k-NN radii shrink as a set grows, so compare sets of equal (or at least fixed) size.

  Args:
    real_feats: (N, D) features of real images.
    fake_feats: (M, D) features of generated images.
    k: neighbour defining the radii (3 in the paper).
    block: rows per distance block (memory: block * max(N, M) * 8 bytes).

  Returns:
    `PrecisionRecall(precision, recall)`, both in [0, 1].
  """
  real = np.asarray(real_feats, np.float64)
  fake = np.asarray(fake_feats, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"need (N, D) and (M, D) features, got {real.shape} and {fake.shape}")
  precision = manifold_coverage(fake, real, knn_radii(real, k, block), block)
  recall = manifold_coverage(real, fake, knn_radii(fake, k, block), block)
  return PrecisionRecall(precision, recall)
