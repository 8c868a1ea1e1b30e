"""Tests of lsdm_jax.data.sources: the embedded data and the npz reader."""

import numpy as np
import pytest

from lsdm_jax.data import sources
from lsdm_jax.errors import DataError


def test_mnist5k_is_the_canonical_split(mnist5k):
  assert mnist5k.train_images.shape == (4000, 28, 28, 1)
  assert mnist5k.test_images.shape == (1000, 28, 28, 1)
  assert mnist5k.train_images.dtype == np.uint8
  assert np.all(mnist5k.test_index % 5 == 4)
  assert not np.any(mnist5k.train_index % 5 == 4)
  # Sorted by class, 500 per class: the split keeps 400 / 100 of each.
  assert np.all(np.bincount(mnist5k.train_labels) == 400)
  assert np.all(np.bincount(mnist5k.test_labels) == 100)
  assert mnist5k.num_classes == 10
  # Real digits: mostly dark background, some bright strokes.
  x = sources.to_float(mnist5k.test_images)
  assert 0.05 < x.mean() < 0.25 and x.max() == 1.0


def test_mnist5k_cache_is_rebuilt_when_damaged(tmp_path, monkeypatch):
  monkeypatch.setenv("LSDM_JAX_CACHE", str(tmp_path))
  (tmp_path / "mnist5k.npz").write_bytes(b"not a zip")
  ds = sources.load_source("mnist5k")
  assert ds.train_images.shape == (4000, 28, 28, 1)
  with np.load(tmp_path / "mnist5k.npz") as f:
    assert f["images"].shape == (5000, 28, 28, 1)


def _save(path, **arrays):
  np.savez(path, **arrays)
  return f"npz:{path}"


def test_npz_source_uint8_and_float(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
  labels = np.arange(50) % 3
  ds = sources.load_source(_save(tmp_path / "a.npz", images=images, labels=labels))
  assert ds.train_images.shape == (40, 8, 8, 1) and ds.test_images.shape == (10, 8, 8, 1)
  assert ds.num_classes == 3 and ds.train_labels.dtype == np.int32
  ds = sources.load_source(_save(tmp_path / "b.npz", images=rng.random((10, 4, 4, 3))))
  assert ds.train_images.dtype == np.float32 and ds.train_labels is None and ds.num_classes == 0


@pytest.mark.parametrize(
  "arrays, message",
  [
    ({"pixels": np.zeros((4, 8, 8))}, "no 'images'"),
    ({"images": np.zeros((4, 8, 8)) + np.nan}, "NaN"),
    ({"images": np.full((4, 8, 8), 2.0)}, "outside [0, 1]"),
    ({"images": np.zeros((4, 8, 8), np.int64)}, "dtype"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros(3)}, "4 images"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": -np.ones(4)}, "negative"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.full(4, 0.5)}, "whole numbers"),
    ({"images": np.zeros((4, 8, 8, 2), np.uint8)}, "channels"),
    ({"images": np.zeros((8,), np.uint8)}, "shape"),
  ],
)
def test_npz_source_rejects_bad_files(tmp_path, arrays, message):
  with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
    sources.load_source(_save(tmp_path / "bad.npz", **arrays))


def test_npz_object_arrays_are_refused_not_unpickled(tmp_path):
  images = np.empty(2, dtype=object)
  images[0], images[1] = np.zeros((8, 8)), np.zeros((8, 8))
  path = tmp_path / "obj.npz"
  np.savez(path, images=images)
  with pytest.raises(DataError, match="object arrays"):
    sources.load_source(f"npz:{path}")


def test_missing_and_unknown_sources(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    sources.load_source(f"npz:{tmp_path / 'nope.npz'}")
  (tmp_path / "junk.npz").write_bytes(b"\x00junk")
  with pytest.raises(DataError, match="not a readable"):
    sources.load_source(f"npz:{tmp_path / 'junk.npz'}")
  with pytest.raises(DataError, match="unknown data source"):
    sources.load_source("imagenet")


def test_missing_tfds_data_fails_fast_with_the_fix(tmp_path):
  with pytest.raises(DataError, match="tfds build mnist"):
    sources.load_source("tfds:mnist", data_dir=str(tmp_path))


def test_a_missing_tfds_data_set_leaves_absl_logging_as_it_was(tmp_path, caplog):
  # TFDS's own warnings are silenced while the data set is opened; afterwards the absl
  # logger must again pass INFO lines on to whoever asks for them (it once stayed pinned
  # at WARNING, and every later INFO line of the process was lost).
  from absl import logging as absl_logging

  level = absl_logging.get_absl_logger().level
  with pytest.raises(DataError):
    sources.load_source("tfds:mnist", data_dir=str(tmp_path))
  assert absl_logging.get_absl_logger().level == level
  with caplog.at_level("INFO"):
    absl_logging.info("still heard")
  assert "still heard" in caplog.text


# --------------------------------------------------------------------------- fingerprints


def test_mnist5k_is_named_without_reading_its_pixels(mnist5k):
  assert mnist5k.fingerprint == sources.MNIST5K_FINGERPRINT
  train, test = mnist5k.split_fingerprint("train"), mnist5k.split_fingerprint("test")
  assert train.startswith(mnist5k.fingerprint) and "|train|28x28x1|4000 rows" in train
  assert "|test|28x28x1|1000 rows" in test
  # Another selection of rows is another name; the same rows the same name.
  rows = np.arange(10)
  assert mnist5k.split_fingerprint("test", rows) not in (test, train)
  assert mnist5k.split_fingerprint("test", rows) == mnist5k.split_fingerprint("test", rows + 0)
  assert mnist5k.split_fingerprint("test", rows) != mnist5k.split_fingerprint("test", rows + 1)
  with pytest.raises(ValueError, match="'train' or 'test'"):
    mnist5k.split_fingerprint("validation")


def test_a_dataset_without_a_fingerprint_names_no_split(mnist5k):
  import dataclasses

  anonymous = dataclasses.replace(mnist5k, fingerprint="")
  assert anonymous.split_fingerprint("train") == ""


def test_npz_fingerprint_follows_the_file_not_its_loads(tmp_path):
  import os

  images = np.random.default_rng(0).integers(0, 256, (20, 4, 4), dtype=np.uint8)
  name = _save(tmp_path / "a.npz", images=images)
  first = sources.load_source(name)
  assert first.fingerprint == sources.load_source(name).fingerprint  # Loading again: same.
  assert first.fingerprint.startswith("npz:") and "a.npz" in first.fingerprint
  _save(tmp_path / "a.npz", images=images[::-1])  # Same size, rewritten.
  st = os.stat(tmp_path / "a.npz")
  os.utime(tmp_path / "a.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
  assert sources.load_source(name).fingerprint != first.fingerprint
  other = sources.load_source(_save(tmp_path / "b.npz", images=images))
  assert other.fingerprint != first.fingerprint
