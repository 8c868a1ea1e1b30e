"""Tests for PSNR, SSIM and low-resolution consistency."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax.data.tasks import avg_pool
from lsdm_jax.metrics.image import consistency, psnr, ssim


@pytest.fixture
def images(key):
  return jax.random.uniform(key, (3, 16, 16, 2))


def _ssim_reference(a: np.ndarray, b: np.ndarray, max_val: float = 1.0) -> float:
  """Direct loops over every 11x11 window of one (H, W) channel pair, in float64."""
  x = np.arange(11) - 5.0
  g = np.exp(-(x**2) / (2 * 1.5**2))
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  values = []
  for i in range(a.shape[0] - 10):
    for j in range(a.shape[1] - 10):
      pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
      ma, mb = (w * pa).sum(), (w * pb).sum()
      va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
      cov = (w * (pa - ma) * (pb - mb)).sum()
      values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
  return float(np.mean(values))


def test_psnr_identical_is_inf_and_known_mse(images):
  assert psnr(images, images).shape == (3,)
  assert np.all(np.isinf(psnr(images, images)))
  a = jnp.full((2, 4, 4, 1), 0.5)
  np.testing.assert_allclose(psnr(a, a + 0.1), 20.0, rtol=1e-5)  # MSE 0.01.
  np.testing.assert_allclose(psnr(a * 255, (a + 0.1) * 255, max_val=255.0), 20.0, rtol=1e-5)


def test_ssim_identical_is_one(images):
  np.testing.assert_allclose(ssim(images, images), 1.0, rtol=1e-5)


def test_ssim_matches_direct_reference(images, key):
  noisy = jnp.clip(images + 0.2 * jax.random.normal(key, images.shape), 0, 1)
  got = np.asarray(ssim(images, noisy))
  a, b = np.asarray(images, np.float64), np.asarray(noisy, np.float64)
  expected = [
    np.mean([_ssim_reference(a[n, ..., c], b[n, ..., c]) for c in range(2)]) for n in range(3)
  ]
  np.testing.assert_allclose(got, expected, atol=2e-5)
  assert np.all(got < 0.99)


def test_ssim_of_constant_images_is_the_luminance_term():
  a, b = jnp.full((1, 11, 11, 1), 0.2), jnp.full((1, 11, 11, 1), 0.6)
  c1 = 0.01**2
  expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
  np.testing.assert_allclose(ssim(a, b), expected, rtol=1e-5)


def test_ssim_is_jittable_and_rejects_small_images(images):
  np.testing.assert_allclose(
    jax.jit(ssim)(images, images * 0.9), ssim(images, images * 0.9), rtol=1e-6
  )
  with pytest.raises(ValueError):
    ssim(images[:, :8, :8], images[:, :8, :8])


def test_consistency_of_pooled_then_upsampled_outputs_is_near_exact(images):
  low = avg_pool(images, 4)
  assert low.shape == (3, 4, 4, 2)
  upsampled = jnp.repeat(jnp.repeat(low, 4, axis=1), 4, axis=2)
  # Exact up to float32 round-off in the block means (+inf or > 100 dB).
  assert np.all(consistency(upsampled, low, 4) > 100.0)
  assert np.all(np.isfinite(consistency(images, low + 0.05, 4)))
