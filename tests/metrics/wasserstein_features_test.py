"""Tests for the joint (label, features) Sinkhorn W1."""

import numpy as np
import pytest

from lsdm_jax.metrics.wasserstein_features import joint_points, joint_w1_sinkhorn


@pytest.fixture
def cloud():
  """300 points of 3 classes whose features are centred at the class index."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  feats = labels[:, None] * 1.0 + 0.3 * rng.normal(size=(300, 4))
  return labels.astype(np.int32), feats.astype(np.float32)


def test_joint_points_one_hot_and_float_conditions():
  pts = joint_points(np.array([1, 0]), np.ones((2, 3)), label_scale=2.0, num_classes=3)
  np.testing.assert_allclose(pts, [[0, 2, 0, 1, 1, 1], [2, 0, 0, 1, 1, 1]])
  pts = joint_points(
    np.ones((2, 2, 2, 1), np.float32), np.zeros((2, 1)), label_scale=1.0, num_classes=0
  )
  assert pts.shape == (2, 5)


def test_zero_on_equal_clouds_and_nonnegative(cloud):
  labels, feats = cloud
  assert joint_w1_sinkhorn(labels, feats, labels, feats) == pytest.approx(0.0, abs=1e-4)
  rng = np.random.default_rng(1)
  other = feats + 0.3 * rng.normal(size=feats.shape).astype(np.float32)
  assert joint_w1_sinkhorn(labels, feats, labels, other) >= 0.0


def test_permuted_labels_cost_more(cloud):
  labels, feats = cloud
  half = len(labels) // 2
  base = joint_w1_sinkhorn(labels[:half], feats[:half], labels[half:], feats[half:])
  permuted = np.random.default_rng(2).permutation(labels[half:])
  shuffled = joint_w1_sinkhorn(labels[:half], feats[:half], permuted, feats[half:])
  assert shuffled > 2 * base
