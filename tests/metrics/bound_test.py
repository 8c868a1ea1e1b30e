"""Tests of the bound's terms: Jacobian norms, latent W1, reconstruction, and all together."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import test as test_config
from lsdm_jax import model as model_lib
from lsdm_jax import parallel, stage1, stage2, wasserstein
from lsdm_jax.data import make_task
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import bound


class SmallDecoder(nn.Module):
  @nn.compact
  def __call__(self, z):
    h = nn.gelu(nn.Dense(16)(z))
    return nn.sigmoid(nn.Dense(20)(h)).reshape(z.shape[0], 4, 5, 1)


def _exact_norms(fn, z: np.ndarray) -> np.ndarray:
  """‖J‖₂ per row from the full Jacobian (jacfwd) and an SVD."""
  jac = jax.jit(jax.jacfwd(lambda zi: fn(zi[None]).reshape(-1)))
  return np.array([np.linalg.norm(np.asarray(jac(zi)), ord=2) for zi in z])


def test_power_iteration_matches_the_exact_spectral_norm(key):
  module = SmallDecoder()
  params = module.init(key, jnp.zeros((1, 3)))
  z = np.asarray(2.0 * jax.random.normal(jax.random.key(1), (6, 3)))

  def fn(zz):
    return module.apply(params, zz)

  exact = _exact_norms(fn, z)
  norms = jax.jit(lambda zz, k, n: bound.jacobian_spectral_norm(fn, zz, k, num_iterations=n))
  np.testing.assert_allclose(norms(z, key, 100), exact, rtol=1e-4)
  # ‖J v‖ with ‖v‖ = 1 never exceeds σ₁: a short run under-estimates, never over.
  assert np.all(np.asarray(norms(z, key, 1)) <= exact * (1 + 1e-5))


def _random_params(init_fn, *args, seed: int = 0):
  """LeCun-normal kernels and zero biases for `init_fn(key, *args)`'s shapes, drawn with
  NumPy: no compilation (jitting these inits costs seconds; their values do not matter)."""
  rng = np.random.default_rng(seed)

  def draw(s):
    if len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)

  return jax.tree.map(draw, jax.eval_shape(init_fn, jax.random.key(0), *args)["params"])


@pytest.fixture(scope="module")
def tiny_lsdm(mnist5k):
  """An untrained LSDM of the tiny test config, with non-trivial latent statistics."""
  config = test_config.get_config()
  task = make_task("classcond", mnist5k.image_shape, mnist5k.num_classes)
  ae = stage1.make_model(config.stage1, mnist5k.image_shape)
  ae_params = _random_params(ae.init, jnp.zeros((1, *mnist5k.image_shape)))
  d = config.stage1.latent_dim
  s2 = stage2.Stage2(config, task, d, parallel.make_mesh(1, 1))
  eta = jnp.zeros((1, config.stage2.noise_dim))
  gen_params = _random_params(s2.generator.init, eta, jnp.zeros((1,), jnp.int32))
  rng = np.random.default_rng(0)
  mean = rng.normal(size=d).astype(np.float32)
  std = rng.uniform(0.5, 2.0, size=d).astype(np.float32)
  return model_lib.build(
    config, task, mnist5k.image_shape, ae, ae_params, s2, gen_params, mean, std
  )


# Sizes shared with `bound_terms(..., max_points=N, num_lipschitz=N_LIP)` below, so that
# the tests reuse its compilations (Sinkhorn on N points, Jacobian norms on 2 · N_LIP).
N, N_LIP, ITERATIONS = 200, 32, 60


def test_lipschitz_is_per_standardised_unit(tiny_lsdm, key):
  lsdm = tiny_lsdm
  mean, std = np.asarray(lsdm.params["mean"]), np.asarray(lsdm.params["std"])

  def lip(z, **kwargs):
    return bound.lipschitz_decoder(
      lsdm.autoencoder,
      lsdm.params["decoder"],
      z,
      key,
      num_interpolates=0,
      num_iterations=ITERATIONS,
      **kwargs,
    )

  z_raw = np.asarray(jax.random.normal(key, (2 * N_LIP, len(mean)))) * std + mean
  z_std = (z_raw - mean) / std
  # At the given points alone (no interpolates) it is the exact maximum of ‖J_D diag(std)‖.
  est = lip(z_std, mean=mean, std=std)

  def standardised_decoder(zs):
    return lsdm.decode(mean[None] + std[None] * zs)

  assert est == pytest.approx(_exact_norms(standardised_decoder, z_std).max(), rel=1e-3)
  raw = lip(z_raw)
  assert raw == pytest.approx(_exact_norms(lsdm.decode, z_raw).max(), rel=1e-3)
  assert abs(raw - est) > 0.01 * est  # The units matter for this (non-unit) std.
  # A uniform std c scales the constant by c exactly.
  c = 3.0
  scaled = lip(z_raw / c, mean=np.zeros_like(mean), std=np.full_like(std, c))
  assert scaled == pytest.approx(c * raw, rel=1e-4)


@pytest.fixture
def cloud():
  """N points of 10 classes in 8 dimensions, class k centred at 1.5 · k."""
  rng = np.random.default_rng(0)
  labels = np.arange(N) % 10
  z = labels[:, None] * 1.5 + rng.normal(size=(N, 8))
  return labels.astype(np.int32), z.astype(np.float32)


# The bound's W1 of joint clouds: its Sinkhorn settings and its dense costs for images.
_latent_w1 = functools.partial(
  wasserstein.joint_w1,
  epsilon=bound.DEFAULT_EPSILON,
  max_iterations=bound.SINKHORN_ITERATIONS,
  dense_above=bound.POINT_CLOUD_MAX_DIM,
)


def test_latent_w1_is_zero_on_equal_clouds_and_the_shift_length_under_a_shift(cloud):
  labels, z = cloud
  w1 = lambda za, zb: _latent_w1(labels, za, labels, zb, num_classes=10, cond_scale=30.0)
  assert w1(z, z) == pytest.approx(0.0, abs=1e-3)
  direction = np.linspace(-1.0, 2.0, 8, dtype=np.float32)
  direction /= np.linalg.norm(direction)
  # W1(μ, μ + s) = ‖s‖ exactly: the identity coupling costs ‖s‖ and f(z) = ⟨z, s⟩/‖s‖
  # is 1-Lipschitz with E f(μ + s) − E f(μ) = ‖s‖.
  values = [w1(z, z + length * direction[None]) for length in (0.25, 0.5, 1.0)]
  np.testing.assert_allclose(values, [0.25, 0.5, 1.0], rtol=0.05)


def test_cond_scale_keeps_transport_within_classes(cloud):
  labels, z = cloud
  shifted = (labels + 1) % 10  # The same latents, each filed under the next class.
  w1 = lambda scale: _latent_w1(labels, z, shifted, z, num_classes=10, cond_scale=scale)
  # Label changes cost √2 · scale. Cheap, mass keeps its latent and changes label; dear,
  # it stays in its class and moves to that class's latents in the other cloud: for
  # class k, from centre 1.5 k to 1.5 (k − 1) (class 0: from 0 to 13.5), about
  # 1.5 · √8 · (9 · 1 + 9) / 10 = 7.6 on average.
  assert w1(0.01) < 0.05
  assert 6.0 < w1(30.0) < 9.0


def test_image_sized_points_use_exact_dense_costs(key):
  a = np.asarray(jax.random.uniform(key, (N, 784)))
  exact = np.sqrt(((a[:, None].astype(np.float64) - a[None, ::-1]) ** 2).sum(-1))
  np.testing.assert_allclose(wasserstein.euclidean_cost(a, a[::-1]), exact, rtol=1e-5)
  assert np.all(np.diag(np.asarray(wasserstein.euclidean_cost(a, a))) == 0.0)
  labels = np.arange(N, dtype=np.int32) % 10
  w1 = lambda za, zb: _latent_w1(labels, za, labels, zb, num_classes=10, cond_scale=30.0)
  assert w1(a, a) == pytest.approx(0.0, abs=1e-3)
  shift = np.full((1, 784), 0.5 / 28, np.float32)  # Length 0.5.
  assert w1(a, a + shift) == pytest.approx(0.5, rel=0.05)


def test_reconstruction_error_is_the_mean_pixel_distance(mnist5k):
  y = to_float(mnist5k.test_images[:10])
  assert bound.reconstruction_error(y, y) == 0.0
  assert bound.reconstruction_error(mnist5k.test_images[:10], y) == 0.0  # uint8 in.
  shifted = y.copy()
  shifted[:, 3, 4, 0] += 0.25  # One pixel of each image moves by 0.25.
  assert bound.reconstruction_error(y, shifted) == pytest.approx(0.25, rel=1e-6)
  half = y.copy()
  half[:5] += 0.1  # Half the images move by 0.1 per pixel: 0.1 · 28 each.
  assert bound.reconstruction_error(y, half) == pytest.approx(0.5 * 0.1 * 28, rel=1e-5)
  with pytest.raises(DataError, match="pair up"):
    bound.reconstruction_error(y, y[:5])


def test_bound_terms_of_an_untrained_model(tiny_lsdm, mnist5k):
  out = bound.bound_terms(
    tiny_lsdm, mnist5k, max_points=N, num_lipschitz=N_LIP, num_iterations=ITERATIONS
  )
  expected = {
    "reconstruction",
    "reconstruction_w1",
    "latent_w1",
    "latent_w1_real",
    "lipschitz",
    "value",
    "data_w1",
    "num_points",
  }
  assert set(out) == expected and all(np.isfinite(v) for v in out.values())
  assert out["num_points"] == N
  assert out["value"] == pytest.approx(
    out["reconstruction"] + max(1.0, out["lipschitz"]) * out["latent_w1"]
  )
  # The reconstruction term agrees with the model's own encode/decode on the same images.
  rows = np.sort(np.random.default_rng(0).choice(len(mnist5k.test_images), N, replace=False))
  images = to_float(mnist5k.test_images[rows])
  recon = np.asarray(tiny_lsdm.decode(tiny_lsdm.encode(images)))
  assert out["reconstruction"] == pytest.approx(bound.reconstruction_error(images, recon), rel=1e-4)
  # The identity coupling bounds the W1 of the reconstructions (up to Sinkhorn's error).
  assert out["reconstruction_w1"] <= out["reconstruction"] * 1.01
  assert out["lipschitz"] > 0 and out["latent_w1"] > 0 and out["latent_w1_real"] > 0
  # The bound holds on this model: its left-hand side is below its right-hand side.
  assert out["data_w1"] <= out["value"]
