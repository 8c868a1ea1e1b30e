"""Fréchet distance between Gaussians fitted to two feature sets (FID in a domain net).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b),

with tr sqrt(S_a S_b) = sum_i sqrt(lambda_i(sqrt(S_a) S_b sqrt(S_a))): the middle matrix is
symmetric positive semi-definite, so two symmetric eigendecompositions (float64) replace the
non-symmetric `scipy.linalg.sqrtm` and its complex round-off.

The statistics of a large set (50,000 x 2048 Inception features) are accumulated batch by
batch with `RunningStats`, so the features never need to be held at once.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CHUNK = 1024


def _combine(
  n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
  """Count, mean and centred scatter matrix of the union of two sets (Chan et al., 1979)."""
  n = n_a + n_b
  delta = mean_b - mean_a
  mean = mean_a + delta * (n_b / n)
  m2 = m2_a + m2_b
  m2 += np.outer(delta, delta * (n_a * n_b / n))
  return n, mean, m2


class RunningStats:
  """Mean and covariance of feature rows that arrive in batches, accumulated in float64.

  Each chunk of rows is centred on its own mean and merged through the difference of means
  (Chan et al.'s pairwise update), which avoids the cancellation of sum(x x^T) / n - mu mu^T
  when the mean is large against the spread. Batches smaller than `chunk` rows are buffered,
  so the D x D update runs once per chunk rather than once per (say, 50-image) batch.

  Example::

    stats = RunningStats()
    for batch in batches:
      stats.update(features(batch))
    mu, sigma = stats.stats()
  """

  def __init__(self, chunk: int = DEFAULT_CHUNK):
    """Args: chunk: rows buffered before a D x D update (memory: chunk * D * 8 bytes)."""
    self.chunk = int(chunk)
    self._n = 0
    self._mean: np.ndarray | None = None
    self._m2: np.ndarray | None = None
    self._dim: int | None = None
    self._pending: list[np.ndarray] = []
    self._pending_rows = 0

  @property
  def count(self) -> int:
    """Rows seen so far."""
    return self._n + self._pending_rows

  @property
  def dim(self) -> int | None:
    """The feature dimension D, or None before the first batch."""
    return self._dim

  def update(self, batch: np.ndarray) -> RunningStats:
    """Adds (n, D) feature rows (n may be 0); returns self.

    Raises:
      ValueError: the batch is not 2-D, its D differs from earlier batches', or it holds a
        non-finite value.
    """
    batch = np.array(batch, np.float64)  # A copy: the caller may reuse its buffer.
    if batch.ndim != 2 or (self._dim is not None and batch.shape[1] != self._dim):
      raise ValueError(f"RunningStats needs (n, {self._dim or 'D'}) batches, got {batch.shape}")
    if not np.isfinite(batch).all():
      raise ValueError("RunningStats got non-finite features (NaN or infinity)")
    self._dim = batch.shape[1]
    if len(batch):
      self._pending.append(batch)
      self._pending_rows += len(batch)
    if self._pending_rows >= self.chunk:
      self._flush()
    return self

  def _flush(self) -> None:
    if not self._pending_rows:
      return
    x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
    self._pending, self._pending_rows = [], 0
    mean_b = x.mean(axis=0)
    xc = x - mean_b
    m2_b = xc.T @ xc
    if self._n == 0:
      self._n, self._mean, self._m2 = len(x), mean_b, m2_b
    else:
      self._n, self._mean, self._m2 = _combine(self._n, self._mean, self._m2, len(x), mean_b, m2_b)

  def merge(self, other: RunningStats) -> RunningStats:
    """Adds the rows `other` has seen (e.g. another process's share); returns self."""
    if other.count == 0:
      return self
    if self._dim is not None and other.dim != self._dim:
      raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self._dim}")
    other._flush()
    self._flush()
    self._dim = other.dim
    if self._n == 0:
      self._n, self._mean, self._m2 = other._n, other._mean.copy(), other._m2.copy()
    else:
      self._n, self._mean, self._m2 = _combine(
        self._n, self._mean, self._m2, other._n, other._mean, other._m2
      )
    return self

  def stats(self) -> tuple[np.ndarray, np.ndarray]:
    """mu (D,) and the unbiased covariance sigma (D, D) of the rows so far, float64 copies.

    Raises:
      ValueError: fewer than 2 rows were seen.
    """
    self._flush()
    if self._n < 2:
      raise ValueError(f"the covariance needs at least 2 feature rows, got {self._n}")
    return self._mean.copy(), self._m2 / (self._n - 1)


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of a feature set held in memory.

  Args:
    feats: (N, D) features, N >= 2.

  Returns:
    mu (D,) and the unbiased covariance sigma (D, D), both float64.
  """
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"gaussian_stats needs (N >= 2, D) features, got shape {feats.shape}")
  return RunningStats(chunk=len(feats)).update(feats).stats()


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
