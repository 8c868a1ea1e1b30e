"""Tests for the FID protocol's quantisation, streamed statistics and reference cache."""

import io

import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics.feature_stats import (
  cache_path,
  feature_stats,
  quantize_uint8,
  reference_statistics,
)
from lsdm_jax.metrics.fid import gaussian_stats


def pixel_features(images):
  """(n, H, W, C) float32 -> (n, H*W*C) float64: the pixels themselves as features."""
  assert images.dtype == np.float32
  return images.reshape(len(images), -1).astype(np.float64)


@pytest.fixture
def images():
  return np.random.default_rng(0).random((57, 3, 2, 1), dtype=np.float32)


def batched(images, sizes):
  out, start = [], 0
  for size in sizes:
    out.append(images[start : start + size])
    start += size
  assert start == len(images)
  return out


# --------------------------------------------------------------------------- quantisation


def test_quantisation_round_trips_every_uint8_value():
  levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  np.testing.assert_array_equal(quantize_uint8(to_float(levels)), levels)
  assert quantize_uint8(levels) is levels


def test_quantisation_rounds_to_the_nearest_level_and_clips():
  x = np.array([-0.3, 0.2 / 255, 0.7 / 255, 100.4 / 255, 100.6 / 255, 254.6 / 255, 1.0, 1.7])
  np.testing.assert_array_equal(quantize_uint8(x), [0, 0, 1, 100, 101, 255, 255, 255])
  rand = np.random.default_rng(1).uniform(-0.2, 1.2, size=(1000,)).astype(np.float32)
  err = np.abs(to_float(quantize_uint8(rand)) - np.clip(rand, 0.0, 1.0))
  assert err.max() <= 0.5 / 255 + 1e-6


def test_quantisation_rejects_non_finite_and_integer_images():
  with pytest.raises(DataError, match="NaN"):
    quantize_uint8(np.array([0.5, np.nan], np.float32))
  with pytest.raises(DataError, match="dtype"):
    quantize_uint8(np.array([1, 2], np.int16))


# --------------------------------------------------------------------------- streaming


def test_feature_stats_equal_the_statistics_of_the_quantised_set(images):
  seen = []

  def features(batch):
    seen.append(batch)
    return pixel_features(batch)

  stats = feature_stats(batched(images, [20, 20, 17]), features, keep=10, seed=3)
  quantised = to_float(quantize_uint8(images))
  # The extractor saw the quantised values k / 255, as float32.
  np.testing.assert_array_equal(np.concatenate(seen), quantised)
  mu, sigma = gaussian_stats(pixel_features(quantised))
  np.testing.assert_allclose(stats.mu, mu, rtol=0, atol=1e-12)
  np.testing.assert_allclose(stats.sigma, sigma, rtol=0, atol=1e-12)
  assert stats.count == 57
  assert stats.features.shape == (10, 6) and stats.features.dtype == np.float32
  assert np.all(np.diff(stats.rows) > 0) and 0 <= stats.rows[0] and stats.rows[-1] < 57
  np.testing.assert_array_equal(stats.features, pixel_features(quantised)[stats.rows])


def test_the_subset_depends_on_the_seed_and_not_on_the_batching(images):
  a = feature_stats(batched(images, [57]), pixel_features, keep=12, seed=0)
  b = feature_stats(batched(images, [1, 5, 30, 21]), pixel_features, keep=12, seed=0)
  c = feature_stats(batched(images, [57]), pixel_features, keep=12, seed=1)
  np.testing.assert_array_equal(a.rows, b.rows)
  np.testing.assert_array_equal(a.features, b.features)
  assert not np.array_equal(a.rows, c.rows)


def test_the_subset_is_uniform_over_the_stream():
  # A bottom-k sample keeps each row with probability keep / N, wherever it is in the stream.
  images = np.zeros((40, 1, 1, 1), np.float32)
  hits = np.zeros(40)
  for seed in range(500):
    hits[feature_stats([images[:13], images[13:]], pixel_features, keep=10, seed=seed).rows] += 1
  assert hits.sum() == 5000
  np.testing.assert_allclose(hits / 500, 0.25, atol=0.1)  # Binomial std 0.019 per row.
  assert abs(hits[:20].mean() - hits[20:].mean()) / 500 < 0.03


def test_keep_larger_than_the_set_keeps_every_row_and_zero_keeps_none(images):
  every = feature_stats([images], pixel_features, keep=1000)
  np.testing.assert_array_equal(every.rows, np.arange(57))
  none = feature_stats([images], pixel_features, keep=0)
  assert none.features.shape == (0, 6) and none.rows.shape == (0,)
  np.testing.assert_array_equal(none.mu, every.mu)


def test_feature_stats_without_quantisation_sees_the_floats(images):
  stats = feature_stats([images], pixel_features, keep=0, quantize=False)
  np.testing.assert_allclose(stats.mu, pixel_features(images).mean(axis=0), rtol=1e-12)


def test_feature_stats_errors(images):
  with pytest.raises(ValueError, match="at least 2"):
    feature_stats([images[:1]], pixel_features)
  with pytest.raises(ValueError, match="shape"):
    feature_stats([images], lambda x: pixel_features(x)[:-1])


# --------------------------------------------------------------------------- reference cache


class CountingBatches:
  """A `batches` callable that counts how often the images are read."""

  def __init__(self, images, size=20):
    self.images, self.size, self.calls = images, size, 0

  def __call__(self):
    self.calls += 1
    return (self.images[i : i + self.size] for i in range(0, len(self.images), self.size))


def assert_same_stats(a, b):
  for field in ("mu", "sigma", "features", "rows"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert a.count == b.count


def test_second_call_reads_the_cache(images, tmp_path):
  batches = CountingBatches(images)
  kwargs = dict(feature_name="pixels", cache_root=tmp_path, keep=8)
  first = reference_statistics("toy/train/57", batches, pixel_features, **kwargs)
  second = reference_statistics("toy/train/57", batches, pixel_features, **kwargs)
  assert batches.calls == 1
  assert_same_stats(first, second)
  path = cache_path("toy/train/57", "pixels", cache_root=tmp_path, keep=8)
  assert path.is_file() and path.parent.name == "fid_reference"
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # No temporary file left.


def _one_array(path):
  buffer = io.BytesIO()
  np.save(buffer, np.zeros(3))
  path.write_bytes(buffer.getvalue())


def _inconsistent(path):
  with np.load(path) as f:
    arrays = dict(f)
  arrays["features"] = arrays["features"][:-1]  # One kept row short.
  np.savez(path, **arrays)


@pytest.mark.parametrize(
  "damage",
  [
    lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    lambda p: p.write_bytes(b"not an npz at all"),
    lambda p: p.write_bytes(b""),
    lambda p: np.savez(p, mu=np.zeros(3)),
    _one_array,
    _inconsistent,
  ],
  ids=["truncated", "garbage", "empty", "other-arrays", "npy", "inconsistent"],
)
def test_a_damaged_cache_is_recomputed_with_a_warning(images, tmp_path, damage):
  batches = CountingBatches(images)
  kwargs = dict(feature_name="pixels", cache_root=tmp_path, keep=8)
  first = reference_statistics("toy/train/57", batches, pixel_features, **kwargs)
  damage(cache_path("toy/train/57", "pixels", cache_root=tmp_path, keep=8))
  with pytest.warns(RuntimeWarning, match="unreadable"):
    again = reference_statistics("toy/train/57", batches, pixel_features, **kwargs)
  assert batches.calls == 2
  assert_same_stats(first, again)
  reference_statistics("toy/train/57", batches, pixel_features, **kwargs)  # Repaired: no warning.
  assert batches.calls == 2


def test_an_entry_of_other_arguments_is_not_reused(images, tmp_path):
  batches = CountingBatches(images)
  path = cache_path("toy/train/57", "pixels", cache_root=tmp_path, keep=8)
  kwargs = dict(feature_name="pixels", cache_root=tmp_path, keep=8)
  reference_statistics("toy/train/57", batches, pixel_features, **kwargs)
  other = cache_path("toy/test/57", "pixels", cache_root=tmp_path, keep=8)
  other.write_bytes(path.read_bytes())  # Copied under another entry's name: its key differs.
  with pytest.warns(RuntimeWarning, match="holds the entry"):
    reference_statistics("toy/test/57", batches, pixel_features, **kwargs)
  assert batches.calls == 2


def test_each_fingerprint_and_feature_net_has_its_own_entry(images, tmp_path):
  batches = CountingBatches(images)
  half = CountingBatches(images[:30])

  def ref(fingerprint, data, feature_name="pixels", keep=8):
    return reference_statistics(
      fingerprint, data, pixel_features, feature_name=feature_name, cache_root=tmp_path, keep=keep
    )

  full, part = ref("toy/train/57", batches), ref("toy/train/30", half)
  ref("toy/train/57", batches, feature_name="other-net")
  ref("toy/train/57", batches, keep=4)
  assert (batches.calls, half.calls) == (3, 1)
  assert (full.count, part.count) == (57, 30)
  assert_same_stats(ref("toy/train/30", half), part)
  assert half.calls == 1
  assert len(list((tmp_path / "fid_reference").iterdir())) == 4


def test_the_default_root_is_the_package_cache(images, tmp_path, monkeypatch):
  monkeypatch.setenv("LSDM_JAX_CACHE", str(tmp_path))
  reference_statistics("toy/train/57", CountingBatches(images), pixel_features, feature_name="p")
  assert cache_path("toy/train/57", "p").parent == tmp_path / "fid_reference"
  assert cache_path("toy/train/57", "p").is_file()


def test_an_unwritable_cache_only_warns(images, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("a file where the cache directory should be")
  with pytest.warns(RuntimeWarning, match="could not cache"):
    stats = reference_statistics(
      "toy/train/57", CountingBatches(images), pixel_features, feature_name="p", cache_root=blocker
    )
  assert stats.count == 57
