"""Image-set statistics for the FID protocol: uint8 quantisation, streaming, cached references.

Papers report FID from 50,000 samples quantised to uint8 (as if saved as PNGs), whose
Inception pool features are compared with statistics of the data set's TRAIN split that are
computed once and reused. The pieces here work on arrays and callables only:

* `quantize_uint8`: float [0, 1] images -> uint8, rounding half up: floor(255 x + 0.5)
  clipped to [0, 255]. This is what torchvision's `save_image`, StyleGAN2-ADA's and EDM's
  sample writers do (`x * 127.5 + 128` on [-1, 1], then a truncating cast), and clean-fid
  then scores the saved files. ADM (guided-diffusion) truncates instead
  (`(x + 1) * 127.5` cast to uint8), half a grey level darker on average. Features are
  computed from the quantised values k / 255.
* `feature_stats`: streams image batches through the quantisation and a feature extractor
  into float64 mean and covariance (`fid.RunningStats`) and a fixed-size, seeded, uniformly
  random subset of the feature rows, since the k-NN metrics (precision/recall, density/
  coverage) need a point set, not moments. ADM's reference batches likewise pair
  whole-split statistics with 10,000 images for precision and recall.
* `reference_statistics`: `feature_stats` of a reference split, cached in one `.npz` per
  caller-given fingerprint under `cache_dir()/fid_reference/`, written atomically; an
  unreadable or mismatched file is recomputed with a warning.

Memory: one image batch and its features at a time, the D x D moments (32 MB at D = 2048)
and the subset (keep x D float32: 80 MB for 10,000 rows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import uuid
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from lsdm_jax.data.sources import cache_dir, to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics.fid import RunningStats

REFERENCE_ROWS = 10_000
CACHE_SUBDIR = "fid_reference"
# Bump when the file layout or the meaning of a field changes: old entries then miss.
FORMAT_VERSION = 1

FeatureFn = Callable[[np.ndarray], np.ndarray]


def quantize_uint8(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] -> uint8, as generated samples are saved (round half up, clip).

  Args:
    images: (..., H, W, C) float in [0, 1] (values outside are clipped) or uint8 (returned
      as is).

  Returns:
    uint8 array of the same shape: floor(255 * x + 0.5) clipped to [0, 255].

  Raises:
    DataError: the images are neither floating point nor uint8, or hold NaN or infinity.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f"images have dtype {images.dtype}; pass float in [0, 1] or uint8")
  bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
  if bad:
    raise DataError(
      f"{bad} pixel values are NaN or infinite; quantize_uint8 needs finite images in [0, 1]"
    )
  return np.floor(np.clip(images * 255.0, 0.0, 255.0) + 0.5).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Statistics of one image set's features.

  Attributes:
    mu: (D,) float64 mean of all rows.
    sigma: (D, D) float64 unbiased covariance of all rows.
    count: the number of rows (images) seen.
    features: (K, D) float32, a uniformly random subset of the rows, K = min(keep, count),
      in stream order.
    rows: (K,) int64, the stream positions of those rows.
  """

  mu: np.ndarray
  sigma: np.ndarray
  count: int
  features: np.ndarray
  rows: np.ndarray


class _Subset:
  """A seeded uniform subset of `keep` rows from a stream of unknown length.

  Every row draws a uniform key from one generator, in stream order, and the rows with the
  `keep` smallest keys are kept (a bottom-k sample). Draws do not depend on how the stream
  is cut into batches, so the subset depends only on the seed and the order of rows.
  """

  def __init__(self, keep: int, seed: int):
    self.keep = keep
    self._rng = np.random.default_rng(seed)
    self._seen = 0
    self._keys = np.full(keep, np.inf)
    self._rows = np.full(keep, -1, np.int64)
    self._feats: np.ndarray | None = None

  def add(self, feats: np.ndarray) -> None:
    n = len(feats)
    keys = self._rng.random(n)
    first = self._seen
    self._seen += n
    if self.keep == 0 or n == 0:
      return
    if self._feats is None:
      self._feats = np.zeros((self.keep, feats.shape[1]), np.float32)
    chosen = np.argpartition(np.concatenate([self._keys, keys]), self.keep - 1)[: self.keep]
    entering = chosen[chosen >= self.keep] - self.keep
    if not len(entering):
      return
    # Overwrite in place the slots whose rows lost their place: no keep x D copy per batch.
    slots = np.setdiff1d(np.arange(self.keep), chosen[chosen < self.keep], assume_unique=True)
    self._keys[slots] = keys[entering]
    self._rows[slots] = first + entering
    self._feats[slots] = feats[entering]

  def result(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (K, D) float32, rows (K,) int64) sorted by stream position."""
    if self._feats is None:
      return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    valid = np.flatnonzero(self._rows >= 0)
    order = valid[np.argsort(self._rows[valid])]
    return self._feats[order], self._rows[order]


def feature_stats(
  batches: Iterable[np.ndarray],
  features: FeatureFn,
  *,
  keep: int = REFERENCE_ROWS,
  seed: int = 0,
  quantize: bool = True,
) -> FeatureStats:
  """Streams image batches through quantisation and `features` into `FeatureStats`.

  Args:
    batches: (n, H, W, C) image batches, float in [0, 1] or uint8; any n, any number.
    features: maps float32 [0, 1] images (n, H, W, C) to (n, D) features, e.g. an
      `inception.InceptionFeatures`; called once per batch.
    keep: rows kept in `FeatureStats.features` for the k-NN metrics (0: none).
    seed: seeds the choice of those rows.
    quantize: quantise float images with `quantize_uint8` first (the FID protocol); False
      scores the floats as they are.

  Returns:
    The statistics of all rows and the subset.

  Raises:
    ValueError: fewer than 2 images, or `features` returned the wrong number of rows.
    DataError: with `quantize`, a batch holds NaN or infinity or has an unusable dtype
      (without it, non-finite features raise ValueError).
  """
  if keep < 0:
    raise ValueError(f"keep must be >= 0 rows, got {keep}")
  stats = RunningStats()
  subset = _Subset(keep, seed)
  for batch in batches:
    images = quantize_uint8(batch) if quantize else batch
    feats = np.asarray(features(to_float(images)))
    if feats.ndim != 2 or len(feats) != len(images):
      raise ValueError(f"features gave shape {feats.shape} for {len(images)} images")
    stats.update(feats)
    subset.add(feats)
  mu, sigma = stats.stats()
  kept, rows = subset.result(len(mu))
  return FeatureStats(mu, sigma, stats.count, kept, rows)


def cache_path(
  fingerprint: str,
  feature_name: str,
  *,
  cache_root: str | os.PathLike | None = None,
  keep: int = REFERENCE_ROWS,
  seed: int = 0,
  quantize: bool = True,
) -> pathlib.Path:
  """The file `reference_statistics` reads and writes for these arguments."""
  root = pathlib.Path(cache_root) if cache_root is not None else cache_dir()
  digest = hashlib.sha256(_cache_key(fingerprint, feature_name, keep, seed, quantize).encode())
  slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{fingerprint}-{feature_name}")[:80]
  return root / CACHE_SUBDIR / f"{slug}-{digest.hexdigest()[:16]}.npz"


def _cache_key(fingerprint: str, feature_name: str, keep: int, seed: int, quantize: bool) -> str:
  fields = {
    "data": fingerprint,
    "features": feature_name,
    "format": FORMAT_VERSION,
    "keep": keep,
    "quantize": quantize,
    "seed": seed,
  }
  return json.dumps(fields, sort_keys=True)


def reference_statistics(
  fingerprint: str,
  batches: Callable[[], Iterable[np.ndarray]],
  features: FeatureFn,
  *,
  feature_name: str,
  cache_root: str | os.PathLike | None = None,
  keep: int = REFERENCE_ROWS,
  seed: int = 0,
  quantize: bool = True,
) -> FeatureStats:
  """`feature_stats` of a reference image set, computed once and cached on disk.

  The cache entry is named by `fingerprint`, `feature_name`, `keep`, `seed`, `quantize` and
  the file format, never by the pixels: the caller vouches that one fingerprint means one
  sequence of images. A missing entry is computed and written atomically (a temporary file
  renamed over the entry); an unreadable, damaged or mismatched one is recomputed with a
  `RuntimeWarning`; a failed write only warns.

  Args:
    fingerprint: names the images, e.g. `"tfds:cifar10/3.0.2/train/32x32/50000"` (source,
      version, split, image size, rows).
    batches: returns a fresh iterable of (n, H, W, C) image batches (float in [0, 1] or
      uint8); called only when the cache misses.
    features: the feature extractor (see `feature_stats`).
    feature_name: names the extractor and its weights, e.g. `"inception-pt-2015-12-05"`, so
      features of different nets never share an entry.
    cache_root: directory holding `fid_reference/`; default `data.sources.cache_dir()`.
    keep: feature rows kept for the k-NN metrics (default 10,000, ADM's choice).
    seed: seeds the choice of those rows.
    quantize: quantise float images to uint8 first.

  Returns:
    The `FeatureStats` of the reference set.
  """
  path = cache_path(
    fingerprint, feature_name, cache_root=cache_root, keep=keep, seed=seed, quantize=quantize
  )
  key = _cache_key(fingerprint, feature_name, keep, seed, quantize)
  if path.exists():
    try:
      return _load(path, key, keep)
    except Exception as e:  # noqa: BLE001 - any unreadable entry is simply recomputed.
      warnings.warn(
        f"reference statistics {path} are unreadable ({type(e).__name__}: {e}); recomputing",
        RuntimeWarning,
        stacklevel=2,
      )
  stats = feature_stats(batches(), features, keep=keep, seed=seed, quantize=quantize)
  _save(path, key, stats)
  return stats


def _load(path: pathlib.Path, key: str, keep: int) -> FeatureStats:
  # Our own handle: np.load leaks its file when a damaged archive fails to open.
  with open(path, "rb") as handle:
    archive = np.load(handle, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
      raise ValueError("not an .npz archive")
    with archive:
      stored = str(archive["key"])
      mu, sigma, count = archive["mu"], archive["sigma"], int(archive["count"])
      feats, rows = archive["features"], archive["rows"]
  if stored != key:
    raise ValueError(f"it holds the entry {stored}, not {key}")
  d = mu.shape[0] if mu.ndim == 1 else -1
  k = min(keep, count)
  if sigma.shape != (d, d) or count < 2 or feats.shape != (k, d) or rows.shape != (k,):
    raise ValueError(
      f"inconsistent shapes: mu {mu.shape}, sigma {sigma.shape}, features {feats.shape}, "
      f"rows {rows.shape} for {count} images"
    )
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all() and np.isfinite(feats).all()):
    raise ValueError("non-finite statistics")
  if k and (rows[0] < 0 or rows[-1] >= count or np.any(np.diff(rows) <= 0)):
    raise ValueError("row indices out of order or out of range")
  return FeatureStats(
    mu.astype(np.float64),
    sigma.astype(np.float64),
    count,
    feats.astype(np.float32),
    rows.astype(np.int64),
  )


def _save(path: pathlib.Path, key: str, stats: FeatureStats) -> None:
  """Writes a private temporary file and renames it over `path`; a failure only warns."""
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(
        f,
        key=np.array(key),
        mu=stats.mu,
        sigma=stats.sigma,
        count=np.array(stats.count, np.int64),
        features=stats.features,
        rows=stats.rows,
      )
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    if not isinstance(e, OSError):
      raise
    warnings.warn(
      f"could not cache reference statistics at {path} ({e})", RuntimeWarning, stacklevel=3
    )
