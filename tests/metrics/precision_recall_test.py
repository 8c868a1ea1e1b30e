"""Tests for improved precision and recall."""

import numpy as np
import pytest

from lsdm_jax.metrics.precision_recall import knn_radii, precision_recall


@pytest.fixture
def cloud():
  return np.random.default_rng(0).normal(size=(400, 8))


def test_knn_radii_match_brute_force(cloud):
  d = np.linalg.norm(cloud[:, None] - cloud[None], axis=-1)
  expected = np.sort(d, axis=1)[:, 3]  # Column 0 is the point itself.
  np.testing.assert_allclose(knn_radii(cloud, k=3, block=37), expected, rtol=1e-6, atol=1e-9)


def test_identical_sets_have_full_precision_and_recall(cloud):
  assert precision_recall(cloud, cloud) == (1.0, 1.0)


def test_disjoint_far_sets_have_zero_precision_and_recall(cloud):
  assert precision_recall(cloud, cloud + 100.0) == (0.0, 0.0)


def test_collapse_onto_one_real_point_is_precise_but_not_diverse(cloud):
  fake = np.repeat(cloud[:1], 400, axis=0) + 1e-6 * np.random.default_rng(1).normal(size=(400, 8))
  precision, recall = precision_recall(cloud, fake)
  assert precision > 0.95
  assert recall < 0.05


def test_same_distribution_scores_high_and_block_size_does_not_matter(cloud):
  other = np.random.default_rng(2).normal(size=(400, 8))
  pr = precision_recall(cloud, other, block=64)
  assert pr.precision > 0.8 and pr.recall > 0.8
  assert precision_recall(cloud, other, block=1000) == pr


def test_mismatched_dimensions_raise(cloud):
  with pytest.raises(ValueError):
    precision_recall(cloud, cloud[:, :4])
