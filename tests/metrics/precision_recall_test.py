"""Tests for the k-NN manifold metrics: improved precision/recall, density/coverage."""

import numpy as np
import pytest

from lsdm_jax.metrics.precision_recall import (
  ball_membership,
  density_coverage,
  knn_radii,
  precision_recall,
  sq_distance_blocks,
)


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


# --------------------------------------------------------------------------- density/coverage


def _brute_force(real, fake, k_pr=3, k_dc=5):
  """All four metrics from the full distance matrices (np.linalg.norm, no blocking)."""

  def radii(x, k):
    return np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, k]

  d = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (N, M)
  r_pr, f_pr, r_dc = radii(real, k_pr), radii(fake, k_pr), radii(real, k_dc)
  return (
    np.mean((d <= r_pr[:, None]).any(axis=0)),
    np.mean((d <= f_pr[None, :]).any(axis=1)),
    (d <= r_dc[:, None]).sum() / (k_dc * len(fake)),
    np.mean(d.min(axis=1) <= r_dc),
  )


def test_density_coverage_by_hand():
  # Real points 0, 1, 3, 7 with k = 1: radii 1, 1, 2, 4, balls [-1, 1], [0, 2], [1, 5], [3, 11].
  real = np.array([[0.0], [1.0], [3.0], [7.0]])
  fake = np.array([[0.5], [9.0], [20.0]])
  # 0.5 lies in balls 0 and 1, 9 in ball 3, 20 in none: density (2 + 1 + 0) / (1 * 3).
  # Balls 0, 1 (0.5) and 3 (9) hold a fake, ball 2 (nearest fake 0.5, 2.5 away) does not.
  assert density_coverage(real, fake, k=1) == (1.0, 0.75)


def test_identical_sets_are_fully_covered(cloud):
  dc = density_coverage(cloud, cloud)
  assert dc.coverage == 1.0
  assert 0.5 < dc.density < 2.0


def test_far_away_fakes_have_zero_density_and_coverage(cloud):
  assert density_coverage(cloud, cloud + 100.0) == (0.0, 0.0)


def test_density_rewards_fakes_in_dense_real_regions(cloud):
  # Fakes collapsed onto the real mode sit in many real balls (density >> 1) but cover few.
  fake = 0.05 * np.random.default_rng(3).normal(size=(400, 8))
  dense = density_coverage(cloud, fake)
  assert dense.density > 2.0 and dense.coverage < 0.2


def test_blocked_metrics_equal_the_unblocked_brute_force(cloud):
  fake = np.random.default_rng(4).normal(0.2, 1.1, size=(300, 8))
  expected = _brute_force(cloud, fake)
  for block in (1, 37, 10_000):
    pr = precision_recall(cloud, fake, k=3, block=block)
    dc = density_coverage(cloud, fake, k=5, block=block)
    assert (*pr, *dc) == expected


def test_ball_membership_counts_and_hits():
  support = np.array([[0.0, 0.0], [10.0, 0.0]])
  queries = np.array([[1.0, 0.0], [5.0, 0.0], [50.0, 0.0]])
  counts, hit = ball_membership(queries, support, np.array([5.0, 5.0]), block=2)
  np.testing.assert_array_equal(counts, [1, 2, 0])  # 5 is on both (closed) spheres.
  np.testing.assert_array_equal(hit, [True, True])


def test_sq_distance_blocks_cover_every_row_once():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(10, 3)), rng.normal(size=(4, 3))
  blocks = list(sq_distance_blocks(a, b, block=4))
  assert [s for s, _ in blocks] == [0, 4, 8] and [len(d) for _, d in blocks] == [4, 4, 2]
  full = np.concatenate([d for _, d in blocks])
  np.testing.assert_allclose(full, ((a[:, None] - b[None]) ** 2).sum(-1), rtol=1e-12, atol=1e-12)


def test_density_coverage_errors(cloud):
  with pytest.raises(ValueError):
    density_coverage(cloud, cloud[:, :4])
  with pytest.raises(ValueError):
    density_coverage(cloud, cloud[:0])
  with pytest.raises(ValueError):
    density_coverage(cloud[:5], cloud, k=5)


def test_parity_with_the_prdc_package():
  prdc = pytest.importorskip("prdc")
  rng = np.random.default_rng(6)
  real = rng.normal(size=(600, 32))
  fake = rng.normal(0.1, 1.05, size=(500, 32))
  theirs = prdc.compute_prdc(real, fake, nearest_k=5)
  pr = precision_recall(real, fake, k=5, block=128)
  dc = density_coverage(real, fake, k=5, block=128)
  # Their balls are open (<) and ours closed (<=): equal without exact ties, as here.
  assert pr.precision == theirs["precision"] and pr.recall == theirs["recall"]
  assert dc.density == pytest.approx(theirs["density"], rel=1e-12)
  assert dc.coverage == theirs["coverage"]
