"""Tests for the domain feature net: accuracy, batching, dtypes and the Orbax cache."""

import threading

import jax
import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import classifier
from lsdm_jax.metrics.classifier import FeatureNet, cache_key, load_or_train_classifier


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


def test_cache_round_trip(feature_net, mnist5k, classifier_cache):
  assert (classifier_cache / "classifier" / cache_key(mnist5k)).is_dir()
  restored = load_or_train_classifier(mnist5k, cache_root=classifier_cache)
  same = jax.tree.map(
    lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), restored.params, feature_net.params
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
  import dataclasses

  unlabelled = dataclasses.replace(mnist5k, train_labels=None, num_classes=0)
  with pytest.raises(DataError, match="no labels"):
    load_or_train_classifier(unlabelled, cache_root=tmp_path)
