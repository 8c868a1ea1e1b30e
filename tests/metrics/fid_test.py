"""Tests for the Fréchet distance."""

import numpy as np
import pytest
import scipy.linalg

from lsdm_jax.data.sources import to_float
from lsdm_jax.metrics.fid import (
  RunningStats,
  frechet_distance,
  frechet_distance_from_stats,
  gaussian_stats,
)


def _random_cov(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_sets_give_zero():
  feats = np.random.default_rng(0).normal(size=(500, 16))
  assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_matches_closed_form_for_known_gaussians():
  rng = np.random.default_rng(1)
  mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
  s_a, s_b = _random_cov(rng, 6), _random_cov(rng, 6)
  expected = (
    np.sum((mu_a - mu_b) ** 2)
    + np.trace(s_a)
    + np.trace(s_b)
    - 2 * np.trace(scipy.linalg.sqrtm(s_a @ s_b)).real
  )
  assert frechet_distance_from_stats(mu_a, s_a, mu_b, s_b) == pytest.approx(expected, rel=1e-8)
  # Diagonal covariances: sum (mu_a - mu_b)^2 + sum (sqrt(a) - sqrt(b))^2.
  va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  got = frechet_distance_from_stats(np.zeros(3), np.diag(va), np.ones(3), np.diag(vb))
  assert got == pytest.approx(3.0 + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2))


def test_sample_estimate_converges_to_the_population_value():
  rng = np.random.default_rng(2)
  s_a, s_b = _random_cov(rng, 4), _random_cov(rng, 4)
  mu_b = np.full(4, 0.5)
  a = rng.multivariate_normal(np.zeros(4), s_a, size=100_000)
  b = rng.multivariate_normal(mu_b, s_b, size=100_000)
  exact = frechet_distance_from_stats(np.zeros(4), s_a, mu_b, s_b)
  assert frechet_distance(a, b) == pytest.approx(exact, rel=0.03)


def test_gaussian_stats_shapes_and_errors():
  mu, sigma = gaussian_stats(np.ones((3, 5), np.float32))
  assert mu.shape == (5,) and sigma.shape == (5, 5) and mu.dtype == np.float64
  with pytest.raises(ValueError):
    gaussian_stats(np.ones((1, 5)))


def test_real_vs_real_is_much_smaller_than_noise_vs_real(feature_net, test_features, train_subset):
  fd_real = frechet_distance(feature_net.features(train_subset[0]), test_features)
  noise = np.random.default_rng(3).random((1000, 28, 28, 1), dtype=np.float32)
  fd_noise = frechet_distance(feature_net.features(noise), test_features)
  assert fd_real * 20 < fd_noise


def test_shifting_images_raises_fd(feature_net, mnist5k, test_features):
  images = to_float(mnist5k.train_images[:1000])
  fd = [
    frechet_distance(feature_net.features(np.roll(images, s, axis=2)), test_features)
    for s in (0, 3, 6)
  ]
  assert fd[0] < fd[1] < fd[2]


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_running_stats_equal_numpy_mean_and_cov(chunk):
  rng = np.random.default_rng(4)
  # A mean far from 0 against the spread: where sum(x x^T) / n - mu mu^T would cancel.
  feats = rng.normal(size=(1003, 24)) * rng.uniform(0.1, 3.0, 24) + 50.0
  stats = RunningStats(chunk=chunk)
  for size in (1, 0, 50, 2, 450, 500):  # Uneven batches, an empty one among them.
    stats.update(feats[stats.count : stats.count + size])
  assert stats.count == len(feats) and stats.dim == 24
  mu, sigma = stats.stats()
  np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=0, atol=1e-10)
  np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=0, atol=1e-10)


def test_running_stats_merge_equals_one_stream():
  feats = np.random.default_rng(5).normal(size=(300, 6))
  whole = RunningStats(chunk=64).update(feats)
  left = RunningStats(chunk=64).update(feats[:70])
  left.merge(RunningStats(chunk=64).update(feats[70:]))
  left.merge(RunningStats())  # Merging an empty accumulator changes nothing.
  assert left.count == 300
  for a, b in zip(left.stats(), whole.stats(), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
  empty = RunningStats().merge(whole)
  np.testing.assert_allclose(empty.stats()[1], whole.stats()[1], rtol=0, atol=1e-12)


def test_running_stats_does_not_alias_the_callers_buffer():
  buffer = np.ones((4, 3))
  stats = RunningStats(chunk=100).update(buffer)
  buffer[:] = 7.0  # A caller refilling its batch buffer before the next update.
  stats.update(buffer)
  np.testing.assert_allclose(stats.stats()[0], np.full(3, 4.0))


def test_running_stats_errors():
  stats = RunningStats().update(np.ones((1, 3)))
  with pytest.raises(ValueError, match="at least 2"):
    stats.stats()
  with pytest.raises(ValueError):
    stats.update(np.ones((2, 4)))
  with pytest.raises(ValueError, match="non-finite"):
    stats.update(np.array([[0.0, np.nan, 1.0]]))
  with pytest.raises(ValueError):
    RunningStats().update(np.ones((2, 4))).merge(stats)


def test_frechet_distance_matches_pytorch_fid():
  # pytorch-fid imports torch and torchvision at module level: skipped where they are absent.
  fid_score = pytest.importorskip("pytorch_fid.fid_score")
  rng = np.random.default_rng(6)
  a = rng.normal(size=(500, 32))
  b = rng.normal(0.3, 1.2, size=(400, 32)) @ rng.normal(size=(32, 32)) / 5
  mu_a, s_a = gaussian_stats(a)
  mu_b, s_b = gaussian_stats(b)
  theirs = fid_score.calculate_frechet_distance(mu_a, s_a, mu_b, s_b)
  assert frechet_distance_from_stats(mu_a, s_a, mu_b, s_b) == pytest.approx(theirs, rel=1e-9)
