"""Paired image metrics for super-resolution: PSNR, SSIM and low-resolution consistency.

All functions take float NHWC batches, return one value per image (N,), and are pure jnp,
so they can run under `jax.jit` (shapes and `factor` static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax.data.tasks import block_mean

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"need two (N, H, W, C) batches of equal shape, got {a.shape}, {b.shape}")


def psnr(a: jax.Array, b: jax.Array, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio per image, 10 log10(max_val^2 / MSE), in dB.

  Args:
    a: (N, H, W, C) images.
    b: (N, H, W, C) images.
    max_val: the dynamic range (1.0 for [0, 1] images).

  Returns:
    (N,) float32 PSNR; +inf where the images are identical. Average with `.mean()`.
  """
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  _check_pair(a, b)
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_val**2 / mse)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-(x**2) / (2 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
  """Separable 2-D filtering of every channel of (N, H, W, C), 'valid' region only."""
  n, h, w, c = x.shape
  planes = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w, 1)
  k = window.size
  dn = ("NHWC", "HWIO", "NHWC")
  planes = jax.lax.conv_general_dilated(
    planes, jnp.asarray(window).reshape(k, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn
  )
  planes = jax.lax.conv_general_dilated(
    planes, jnp.asarray(window).reshape(1, k, 1, 1), (1, 1), "VALID", dimension_numbers=dn
  )
  ho, wo = planes.shape[1], planes.shape[2]
  return jnp.transpose(planes.reshape(n, c, ho, wo), (0, 2, 3, 1))


def ssim(
  a: jax.Array,
  b: jax.Array,
  max_val: float = 1.0,
  *,
  window_size: int = SSIM_WINDOW,
  sigma: float = SSIM_SIGMA,
  k1: float = SSIM_K1,
  k2: float = SSIM_K2,
) -> jax.Array:
  """Structural similarity (Wang et al., 2004) per image, as `tf.image.ssim` computes it.

  An 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population (not sample)
  statistics, each channel separately, the map averaged over the 'valid' region (windows
  wholly inside the image) and over channels. Equals skimage's `structural_similarity(
  gaussian_weights=True, use_sample_covariance=False, data_range=max_val)` per channel.

  Args:
    a: (N, H, W, C) images, H and W >= window_size.
    b: (N, H, W, C) images.
    max_val: the dynamic range L (1.0 for [0, 1] images).
    window_size: Gaussian window width.
    sigma: Gaussian window standard deviation.
    k1: luminance stabiliser, C1 = (k1 L)^2.
    k2: contrast stabiliser, C2 = (k2 L)^2.

  Returns:
    (N,) float32 SSIM in [-1, 1]; 1 for identical images.
  """
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  _check_pair(a, b)
  if min(a.shape[1:3]) < window_size:
    raise ValueError(f"SSIM needs images at least {window_size} px wide, got {a.shape[1:3]}")
  window = _gaussian_window(window_size, sigma)
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
  # Second moments of images centred on their own means: the variances are shift invariant,
  # and centring avoids float32 cancellation in E[x^2] - E[x]^2 on flat regions.
  a0 = a - a.mean(axis=(1, 2), keepdims=True)
  b0 = b - b.mean(axis=(1, 2), keepdims=True)
  mu_a0, mu_b0 = _filter_valid(a0, window), _filter_valid(b0, window)
  var_a = _filter_valid(a0 * a0, window) - mu_a0**2
  var_b = _filter_valid(b0 * b0, window) - mu_b0**2
  cov = _filter_valid(a0 * b0, window) - mu_a0 * mu_b0
  luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
  structure = (2 * cov + c2) / (var_a + var_b + c2)
  return jnp.mean(luminance * structure, axis=(1, 2, 3))


def consistency(
  outputs: jax.Array, inputs: jax.Array, factor: int, max_val: float = 1.0
) -> jax.Array:
  """PSNR between the average-pooled outputs and the low-resolution inputs they came from.

  A super-resolved image that is consistent with its input scores high (+inf when exact).

  Args:
    outputs: (N, H, W, C) high-resolution outputs.
    inputs: (N, H/factor, W/factor, C) low-resolution conditions.
    factor: the downsampling factor.
    max_val: the dynamic range.

  Returns:
    (N,) float32 PSNR in dB.
  """
  return psnr(block_mean(jnp.asarray(outputs, jnp.float32), factor), inputs, max_val)
