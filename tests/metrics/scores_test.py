"""Tests for the scorers of samples, on real images and on noise."""

import numpy as np
import pytest

from lsdm_jax.data.sources import to_float
from lsdm_jax.data.tasks import avg_pool
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import scores
from lsdm_jax.metrics.feature_stats import FeatureStats, quantize_uint8
from lsdm_jax.metrics.fid import frechet_distance, gaussian_stats
from lsdm_jax.metrics.precision_recall import density_coverage, precision_recall
from lsdm_jax.metrics.scores import evaluate_classcond, evaluate_superres, pixel_features


def test_real_images_score_like_real_images(mnist5k, feature_net, train_subset):
  images, labels = train_subset
  m = evaluate_classcond(images, labels, mnist5k, feature_net, seed=1)
  assert m["accuracy"] > 0.95
  assert 0.5 < m["fd_ratio"] < 2.0
  assert 0.5 < m["fd_pixels_ratio"] < 2.0
  assert 0.9 < m["diversity_ratio"] < 1.1
  assert m["precision"] > 0.7 and m["recall"] > 0.7
  assert m["joint_w1"] < 1.5 * m["joint_w1_real"]
  assert m["num_samples"] == 1000
  assert all(isinstance(v, float) for v in m.values())


def test_noise_scores_badly(mnist5k, feature_net):
  rng = np.random.default_rng(0)
  noise = rng.random((500, 28, 28, 1), dtype=np.float32)
  labels = rng.integers(0, 10, 500).astype(np.int32)
  m = evaluate_classcond(noise, labels, mnist5k, feature_net, joint_w1=False)
  assert m["accuracy"] < 0.2
  assert m["fd_ratio"] > 2.5 and m["fd_pixels_ratio"] > 2.5
  assert m["recall"] < 0.1
  assert "joint_w1" not in m


def test_wrong_labels_lower_accuracy_and_raise_joint_w1(mnist5k, feature_net, train_subset):
  images, labels = train_subset
  wrong = (labels + 1) % 10
  m = evaluate_classcond(images[:500], wrong[:500], mnist5k, feature_net)
  assert m["accuracy"] < 0.05
  assert m["joint_w1"] > 2 * m["joint_w1_real"]


def test_bad_inputs_are_data_errors(mnist5k, feature_net, train_subset):
  images, labels = train_subset
  with pytest.raises(DataError, match="shape"):
    evaluate_classcond(images[:, :14], labels, mnist5k, feature_net)
  with pytest.raises(DataError, match="labels"):
    evaluate_classcond(images, labels[:10], mnist5k, feature_net)
  with pytest.raises(DataError, match="too few"):
    evaluate_classcond(images[:3], labels[:3], mnist5k, feature_net)
  with pytest.raises(DataError, match="range"):
    evaluate_classcond(images * 255, labels, mnist5k, feature_net)


def test_pixel_features_pool_to_a_small_grid():
  feats = pixel_features(np.ones((2, 28, 28, 1), np.uint8) * 255)
  assert feats.shape == (2, 49)
  np.testing.assert_allclose(feats, 1.0)


def test_superres_perfect_and_upsampled_outputs(mnist5k, feature_net):
  targets = to_float(mnist5k.test_images[:200])
  inputs = np.asarray(avg_pool(targets, 4))
  perfect = evaluate_superres(targets, inputs, targets, 4, feature_net)
  assert np.isinf(perfect["psnr"]) and np.isinf(perfect["consistency"])
  assert perfect["ssim"] == pytest.approx(1.0, abs=1e-5)
  assert perfect["fd"] == pytest.approx(0.0, abs=1e-6)
  assert perfect["precision"] == 1.0 and perfect["recall"] == 1.0
  upsampled = np.repeat(np.repeat(inputs, 4, axis=1), 4, axis=2)
  blurry = evaluate_superres(upsampled, inputs, targets, 4, None)
  assert 5.0 < blurry["psnr"] < 40.0 and blurry["ssim"] < 0.9
  assert blurry["consistency"] > 60.0  # Consistent with its input, though not sharp.
  assert "fd" not in blurry and blurry["fd_pixels"] > 0


def test_distribution_metrics_compare_samples_and_real_images_on_equal_terms():
  rng = np.random.default_rng(0)
  test, ref = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
  shifted = rng.normal(size=(300, 4)) + 3.0
  same = scores.distribution_metrics(ref, ref, test, np.random.default_rng(1))
  assert same["fd"] == same["fd_real"] and same["fd_ratio"] == pytest.approx(1.0)
  assert same["precision"] == same["precision_real"] and same["recall"] == same["recall_real"]
  far = scores.distribution_metrics(shifted, ref, test, np.random.default_rng(1))
  assert far["fd_ratio"] > 50 and far["precision"] < 0.1 and far["recall"] < 0.1


def test_reference_rows_match_the_test_classes_when_given_labels():
  rng = np.random.default_rng(0)
  train_labels = np.repeat(np.arange(3), 20)
  test_labels = np.array([0, 0, 2, 2, 2])
  rows = scores.reference_rows(rng, 60, 5, test_labels, train_labels)
  np.testing.assert_array_equal(np.sort(train_labels[rows]), np.sort(test_labels))
  assert len(scores.reference_rows(rng, 10, 25)) == 25  # With replacement only when needed.
  assert len(set(scores.reference_rows(rng, 30, 25).tolist())) == 25


# --------------------------------------------------------------------------- FID protocol


def _stats(x: np.ndarray) -> FeatureStats:
  """Every row's statistics, every row kept."""
  mu, sigma = gaussian_stats(x)
  return FeatureStats(mu, sigma, len(x), x.astype(np.float32), np.arange(len(x)))


def test_inception_scores_name_the_protocol_s_numbers():
  rng = np.random.default_rng(0)
  reference, real = rng.standard_normal((400, 4)), rng.standard_normal((300, 4))
  far = rng.standard_normal((200, 4)) + 10.0
  out = scores.inception_scores(_stats(far), _stats(reference), _stats(real))
  assert out["fid"] == pytest.approx(frechet_distance(far, reference), rel=1e-9)
  assert out["fid_real"] == pytest.approx(frechet_distance(real, reference), rel=1e-9)
  assert out["fid_real"] < 1.0 < 300.0 < out["fid"]
  pr, dc = precision_recall(reference, real, k=3), density_coverage(reference, real, k=5)
  assert (out["precision_inception_real"], out["recall_inception_real"]) == pytest.approx(pr)
  assert (out["density_inception_real"], out["coverage_inception_real"]) == pytest.approx(dc)
  assert out["precision_inception"] == 0.0 and out["coverage_inception"] == 0.0
  assert out["coverage_inception_real"] > 0.5
  assert (out["fid_num_samples"], out["fid_num_real"], out["fid_reference_images"]) == (
    200,
    300,
    400,
  )


def test_inception_metrics_score_the_images_as_saved():
  """Float samples are scored as the uint8 images they would be saved as."""
  rng = np.random.default_rng(1)
  generated = rng.random((30, 4, 4, 1), dtype=np.float32)
  reference = rng.integers(0, 256, (50, 4, 4, 1), dtype=np.uint8)
  real = rng.integers(0, 256, (20, 4, 4, 1), dtype=np.uint8)

  def features(images):
    # The net sees float32 grey levels k / 255 only.
    assert images.dtype == np.float32
    np.testing.assert_allclose(images * 255, np.round(images * 255), atol=1e-4)
    return images.reshape(len(images), -1).astype(np.float64)

  out = scores.inception_metrics(generated, reference, real, features, keep=25)
  saved = scores.inception_metrics(quantize_uint8(generated), reference, real, features, keep=25)
  assert out == saved and out["fid_num_samples"] == 30
