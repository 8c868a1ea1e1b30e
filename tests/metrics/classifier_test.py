"""Tests for the domain feature net: accuracy, batching, dtypes, the shipped net, the cache."""

import dataclasses
import shutil
import threading

import jax
import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import classifier
from lsdm_jax.metrics.classifier import (
  FeatureNet,
  cache_key,
  load_or_train_classifier,
  shipped_net_for,
)


def _no_training(*args, **kwargs):
  raise AssertionError("train_classifier was called")


def test_accuracy_on_test_split(feature_net, mnist5k):
  accuracy = np.mean(feature_net.predict(mnist5k.test_images) == mnist5k.test_labels)
  assert accuracy >= 0.97


def test_shapes_dtypes_and_batching(feature_net, mnist5k):
  images = mnist5k.test_images[:37]
  logits, feats = feature_net.logits_and_features(images, batch_size=16)
  assert logits.shape == (37, 10) and logits.dtype == np.float32
  assert feats.shape == (37, classifier.FEATURE_DIM)
  # uint8 and float [0, 1] inputs agree, and the padded last batch does not leak.
  np.testing.assert_allclose(feature_net.features(to_float(images)), feats, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(feature_net.features(images[:5]), feats[:5], rtol=1e-4, atol=1e-4)
  assert feature_net.predict(images).dtype == np.int32
  assert feature_net.features(images[:0]).shape == (0, classifier.FEATURE_DIM)


def test_wrong_image_shape_is_a_data_error(feature_net):
  with pytest.raises(DataError, match="expects"):
    feature_net.features(np.zeros((2, 32, 32, 3), np.float32))


def test_cache_round_trip(mnist5k, tmp_path, monkeypatch):
  # The same digits under another name have no shipped net: they are trained and cached.
  digits = dataclasses.replace(mnist5k, name="npz:digits.npz")
  trained = load_or_train_classifier(digits, cache_root=tmp_path, steps=2)
  assert (tmp_path / "classifier" / cache_key(digits)).is_dir()
  monkeypatch.setattr(classifier, "train_classifier", _no_training)
  restored = load_or_train_classifier(digits, cache_root=tmp_path, steps=2)
  same = jax.tree.map(
    lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), restored.params, trained.params
  )
  assert all(jax.tree.leaves(same))


def test_cache_key_names_source_shape_classes_and_version(mnist5k):
  key = cache_key(mnist5k)
  assert key.startswith(f"mnist5k-28x28x1-k10-{classifier.CLASSIFIER_VERSION}-")


def test_corrupt_cache_is_retrained_with_a_warning(mnist5k, tmp_path):
  path = tmp_path / "classifier" / cache_key(mnist5k)
  path.mkdir(parents=True)
  (path / "_METADATA").write_text("not a checkpoint")
  with pytest.warns(RuntimeWarning, match="unreadable"):
    net = load_or_train_classifier(mnist5k, cache_root=tmp_path, steps=2)
  assert isinstance(net, FeatureNet)
  # The corrupt entry was replaced by a readable one.
  again = load_or_train_classifier(mnist5k, cache_root=tmp_path, steps=2)
  leaves = zip(jax.tree.leaves(again.params), jax.tree.leaves(net.params), strict=True)
  assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves)


def test_concurrent_callers_share_one_cache_entry(mnist5k, tmp_path):
  nets, errors = [], []

  def run():
    try:
      nets.append(load_or_train_classifier(mnist5k, cache_root=tmp_path, steps=2, seed=0))
    except Exception as e:  # noqa: BLE001 - reported by the assertion below.
      errors.append(e)

  threads = [threading.Thread(target=run) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and len(nets) == 2
  entries = sorted(p.name for p in (tmp_path / "classifier").iterdir())
  assert entries == [cache_key(mnist5k), cache_key(mnist5k) + ".lock"]


def test_unlabelled_dataset_is_refused(mnist5k, tmp_path):
  unlabelled = dataclasses.replace(mnist5k, train_labels=None, num_classes=0)
  with pytest.raises(DataError, match="no labels"):
    load_or_train_classifier(unlabelled, cache_root=tmp_path)


# --------------------------------------------------------------------------- shipped net


def test_mnist5k_has_a_shipped_net_of_the_current_recipe(mnist5k):
  entry = shipped_net_for(mnist5k)
  assert entry is not None, "retrain it: python -m experiments.train_eval_net"
  assert entry.recipe == classifier.default_recipe()
  net, meta = classifier.read_eval_net(classifier.ASSETS_DIR / entry.filename, sha256=entry.sha256)
  assert meta["train_fingerprint"] == classifier.train_fingerprint(mnist5k)
  assert meta["recipe"] == entry.recipe and meta["source"] == "mnist5k"
  assert meta["classifier_version"] == classifier.CLASSIFIER_VERSION
  assert net.image_shape == (28, 28, 1) and net.num_classes == 10


def test_shipped_net_loads_bit_identically_without_training(mnist5k, tmp_path, monkeypatch):
  monkeypatch.setattr(classifier, "train_classifier", _no_training)
  first = load_or_train_classifier(mnist5k, cache_root=tmp_path)
  second = load_or_train_classifier(mnist5k, cache_root=tmp_path, seed=0)  # The same recipe.
  a, b = first.features(mnist5k.test_images), second.features(mnist5k.test_images)
  assert a.shape == (1000, classifier.FEATURE_DIM) and a.std() > 0
  np.testing.assert_array_equal(a, b)
  assert list(tmp_path.iterdir()) == []  # Nothing cached.


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_shipped_net_is_a_one_line_data_error(mnist5k, tmp_path, monkeypatch, damage):
  entry = shipped_net_for(mnist5k)
  copy = tmp_path / "assets" / entry.filename
  copy.parent.mkdir()
  shutil.copyfile(classifier.ASSETS_DIR / entry.filename, copy)
  data = bytearray(copy.read_bytes())
  if damage == "flip":
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
  elif damage == "truncate":
    copy.write_bytes(bytes(data[:-10]))
  else:
    copy.unlink()
  monkeypatch.setattr(classifier, "ASSETS_DIR", copy.parent)
  monkeypatch.setattr(classifier, "train_classifier", _no_training)
  with pytest.raises(DataError, match="reinstall lsdm-jax") as info:
    load_or_train_classifier(mnist5k, cache_root=tmp_path / "cache")
  message = str(info.value)
  assert "\n" not in message and entry.filename in message
  assert ("cannot be read" if damage == "delete" else "sha256") in message
  assert not (tmp_path / "cache").exists()


def test_other_data_sets_or_recipes_get_no_shipped_net(mnist5k):
  assert shipped_net_for(mnist5k) is not None
  renamed = dataclasses.replace(mnist5k, name="npz:mnist5k.npz")
  other_digits = dataclasses.replace(mnist5k, train_images=mnist5k.train_images[::-1].copy())
  other_labels = dataclasses.replace(mnist5k, train_labels=(mnist5k.train_labels + 1) % 10)
  for dataset in (renamed, other_digits, other_labels):
    assert shipped_net_for(dataset) is None
  assert shipped_net_for(mnist5k, steps=2) is None
  assert shipped_net_for(mnist5k, attributes=True) is None


def test_a_data_set_without_a_shipped_net_still_trains(mnist5k, tmp_path, monkeypatch):
  other_digits = dataclasses.replace(mnist5k, train_images=mnist5k.train_images[::-1].copy())
  calls = []
  train = classifier.train_classifier
  monkeypatch.setattr(
    classifier, "train_classifier", lambda *a, **kw: calls.append(kw) or train(*a, **kw)
  )
  net = load_or_train_classifier(other_digits, cache_root=tmp_path, steps=2)
  assert calls == [{"steps": 2}] and isinstance(net, FeatureNet)
  assert (tmp_path / "classifier" / cache_key(other_digits)).is_dir()


def test_export_writes_a_readable_checksummed_asset(mnist5k, tmp_path):
  meta = classifier.export_eval_net(mnist5k, tmp_path / "net.npz", steps=2, dtype="float16")
  net, stored = classifier.read_eval_net(tmp_path / "net.npz", sha256=meta["sha256"])
  assert stored == {k: v for k, v in meta.items() if k != "sha256"}
  assert stored["recipe"] == {**classifier.default_recipe(), "steps": 2}
  assert stored["dtype"] == "float16" and net.features(mnist5k.test_images[:3]).shape == (3, 128)
