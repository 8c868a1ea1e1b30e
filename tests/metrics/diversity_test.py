"""Tests for within-class diversity."""

import numpy as np
import pytest

from lsdm_jax.errors import DataError
from lsdm_jax.metrics.diversity import diversity_ratio, per_class_diversity, within_class_diversity


def test_known_value():
  feats = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0], [7.0, 7.0]])
  labels = np.array([0, 0, 1, 1, 2])  # Class 2 has one sample and is skipped.
  assert per_class_diversity(feats, labels) == {0: 5.0, 1: 1.0}
  assert within_class_diversity(feats, labels) == pytest.approx(3.0)


def test_collapsed_classes_have_ratio_zero(mnist5k, test_features):
  labels = mnist5k.test_labels
  first_of_class = np.array([np.flatnonzero(labels == c)[0] for c in range(10)])
  collapsed = test_features[first_of_class][labels]  # Each class is one repeated image.
  ratio = diversity_ratio(collapsed, labels, test_features, labels)
  assert ratio == pytest.approx(0.0, abs=1e-3)


def test_real_vs_real_ratio_is_about_one(mnist5k, feature_net, test_features, train_subset):
  images, labels = train_subset
  ratio = diversity_ratio(feature_net.features(images), labels, test_features, mnist5k.test_labels)
  assert 0.9 < ratio < 1.1


def test_subsampling_large_classes_changes_little():
  rng = np.random.default_rng(0)
  feats, labels = rng.normal(size=(3000, 4)), np.repeat([0, 1], 1500)
  full = within_class_diversity(feats, labels, max_per_class=5000)
  sub = within_class_diversity(feats, labels, max_per_class=300)
  assert sub == pytest.approx(full, rel=0.05)


def test_no_class_with_two_samples_is_a_data_error():
  with pytest.raises(DataError):
    within_class_diversity(np.zeros((3, 2)), np.array([0, 1, 2]))
