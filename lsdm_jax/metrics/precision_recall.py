"""k-NN manifold metrics in a feature space: improved precision/recall and density/coverage.

Each real point i carries a ball whose radius is the distance to its k-th nearest neighbour
in the real set (likewise for fake points). Then

* precision (Kynkäänniemi et al., 2019): the fraction of fake points inside some real ball;
* recall: the fraction of real points inside some fake ball;
* density (Naeem et al., 2020): the number of real balls holding a fake point, averaged over
  the fake points and divided by k (about 1 when both sets come from one distribution,
  above 1 when fakes crowd the dense regions of the real data);
* coverage (Naeem et al., 2020): the fraction of real balls holding at least one fake point.

A ball holds the points at distance <= its radius (closed, as in Kynkäänniemi et al.'s
definition and ADM's evaluator); clovaai's `prdc` package compares with `<`. The two agree
unless a distance ties a radius exactly (duplicated or lattice points).

Memory: distances are computed `block` query rows at a time against the whole other set,
in float64, so one block holds `block * M * 8` bytes (512 rows x 50,000 points: 205 MB) and
no N x M matrix exists at once. The k-NN radii shrink as a set grows, so compare sets of
equal (or at least fixed) sizes: the field's protocol uses 10k-50k points per set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

DEFAULT_BLOCK = 512


class PrecisionRecall(NamedTuple):
  precision: float
  recall: float


class DensityCoverage(NamedTuple):
  density: float
  coverage: float


def _as_features(feats: np.ndarray, name: str) -> np.ndarray:
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2:
    raise ValueError(f"{name} must be (N, D) features, got shape {feats.shape}")
  return feats


def _check_pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
  if real.shape[1] != fake.shape[1] or not (len(real) and len(fake)):
    raise ValueError(f"need (N, D) and (M, D) features, got {real.shape} and {fake.shape}")
  return real, fake


def sq_distance_blocks(
  queries: np.ndarray, support: np.ndarray, block: int = DEFAULT_BLOCK
) -> Iterator[tuple[int, np.ndarray]]:
  """Squared Euclidean distances from `queries` to `support`, a block of query rows at a time.

  Args:
    queries: (N, D) points.
    support: (M, D) points.
    block: query rows per block (memory: block * M * 8 bytes).

  Yields:
    (start, d2): d2 is the (b, M) float64 block for queries[start : start + b], b <= block,
    clipped at 0 against the round-off of |a|^2 + |b|^2 - 2 a.b.
  """
  if block < 1:
    raise ValueError(f"block must be a positive number of rows, got {block}")
  queries = np.asarray(queries, np.float64)
  support = np.asarray(support, np.float64)
  support_sq = (support * support).sum(axis=1)
  for start in range(0, queries.shape[0], block):
    a = queries[start : start + block]
    d2 = (a * a).sum(axis=1)[:, None] + support_sq[None, :] - 2.0 * (a @ support.T)
    yield start, np.maximum(d2, 0.0, out=d2)


def knn_radii(feats: np.ndarray, k: int = 3, block: int = DEFAULT_BLOCK) -> np.ndarray:
  """Distance from each point to its k-th nearest neighbour in the same set (self excluded).

  Args:
    feats: (N, D) features, N > k.
    k: which neighbour.
    block: rows per distance block.

  Returns:
    (N,) float64 radii.
  """
  feats = _as_features(feats, "features")
  n = feats.shape[0]
  if not 1 <= k < n:
    raise ValueError(f"knn_radii needs 1 <= k < N, got k={k} for N={n} points")
  radii = np.empty(n)
  for start, d2 in sq_distance_blocks(feats, feats, block):
    # Column 0 of the partition is the point itself (distance 0), so the k-th neighbour
    # is at index k.
    radii[start : start + len(d2)] = np.partition(d2, k, axis=1)[:, k]
  return np.sqrt(radii)


def ball_membership(
  queries: np.ndarray,
  support: np.ndarray,
  support_radii: np.ndarray,
  block: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
  """Which support balls hold which queries, reduced both ways in one blocked pass.

  Args:
    queries: (N, D) points to test.
    support: (M, D) ball centres.
    support_radii: (M,) their radii (closed balls).
    block: query rows per distance block.

  Returns:
    counts: (N,) int64, how many support balls hold each query.
    hit: (M,) bool, whether each support ball holds at least one query.
  """
  queries, support = _check_pair(queries, support)
  r2 = np.asarray(support_radii, np.float64) ** 2
  if r2.shape != (support.shape[0],):
    raise ValueError(f"need one radius per support point, got {r2.shape} for {support.shape}")
  counts = np.zeros(queries.shape[0], np.int64)
  hit = np.zeros(support.shape[0], bool)
  for start, d2 in sq_distance_blocks(queries, support, block):
    inside = d2 <= r2[None, :]
    counts[start : start + len(d2)] = inside.sum(axis=1)
    hit |= inside.any(axis=0)
  return counts, hit


def precision_recall(
  real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 3, block: int = DEFAULT_BLOCK
) -> PrecisionRecall:
  """Improved precision and recall of `fake_feats` against `real_feats`.

  Args:
    real_feats: (N, D) features of real images.
    fake_feats: (M, D) features of generated images.
    k: neighbour defining the radii (3 in the paper).
    block: rows per distance block (memory: block * max(N, M) * 8 bytes).

  Returns:
    `PrecisionRecall(precision, recall)`, both in [0, 1].
  """
  real, fake = _check_pair(real_feats, fake_feats)
  in_real, _ = ball_membership(fake, real, knn_radii(real, k, block), block)
  in_fake, _ = ball_membership(real, fake, knn_radii(fake, k, block), block)
  return PrecisionRecall(float(np.mean(in_real > 0)), float(np.mean(in_fake > 0)))


def density_coverage(
  real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 5, block: int = DEFAULT_BLOCK
) -> DensityCoverage:
  """Density and coverage (Naeem et al., 2020) of `fake_feats` against `real_feats`.

  Only the real set's balls are used, so real outliers cannot inflate the scores the way
  fake outliers inflate precision/recall; one k-NN pass over the real set and one pass over
  the real x fake distances.

  Args:
    real_feats: (N, D) features of real images, N > k.
    fake_feats: (M, D) features of generated images.
    k: neighbour defining the real radii (5 in the paper).
    block: rows per distance block (memory: block * max(N, M) * 8 bytes).

  Returns:
    `DensityCoverage(density, coverage)`: density >= 0 (unbounded, ~1 for matching
    distributions), coverage in [0, 1].
  """
  real, fake = _check_pair(real_feats, fake_feats)
  counts, hit = ball_membership(fake, real, knn_radii(real, k, block), block)
  return DensityCoverage(float(counts.sum() / (k * fake.shape[0])), float(hit.mean()))
