"""Tests of the latent diffusion baseline: sampler correctness, training quality, shapes."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import parallel
from lsdm_jax.baselines import latent_diffusion as ld
from lsdm_jax.errors import ConfigError, DataError, NonFiniteError

from .conftest import section

# One small config for the quick tests, so that they share a single compilation of the step.
TINY = section(
  "latent_diffusion",
  steps=20,
  batch_size=16,
  width=32,
  depth=1,
  cond_features=16,
  time_features=16,
  steps_per_call=10,
)

# Toy conditional law: class k is N(MEANS[k], diag(STDS[k]²)).
MEANS = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], np.float32)
STDS = np.array([[0.3, 0.5], [0.6, 0.2], [0.4, 0.4]], np.float32)


class ExactGaussianDenoiser(nn.Module):
  """The optimal v (or ε) predictor for the data N(MEANS[x], STDS[x]²): no training error."""

  latent_dim: int = 2
  prediction: str = "v"

  def __call__(self, z_t, t, x):
    mu, s = jnp.asarray(MEANS)[x], jnp.asarray(STDS)[x]
    alpha, sigma = ld.alpha_sigma(ld.logsnr_schedule(t)[:, None])
    z0 = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (z_t - alpha * mu)
    if self.prediction == "v":
      return (alpha * z_t - z0) / sigma
    return (z_t - alpha * z0) / sigma


def _class_stats(z: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  z = np.asarray(z)
  return (
    np.stack([z[x == k].mean(0) for k in range(3)]),
    np.stack([z[x == k].std(0) for k in range(3)]),
  )


def _errors(z: np.ndarray, x: np.ndarray) -> tuple[float, float]:
  """(max |mean - truth|, max |log(std / truth)|) over classes and dimensions."""
  mean, std = _class_stats(z, x)
  return float(np.abs(mean - MEANS).max()), float(np.abs(np.log(std / STDS)).max())


def _toy_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = (np.arange(n) % 3).astype(np.int32)
  return x, (MEANS[x] + STDS[x] * rng.normal(size=(n, 2))).astype(np.float32)


@pytest.fixture(scope="module")
def toy_samples():
  """Trains on the toy law once; returns the model and a cached
  sample(num_steps) → (z (3000, 2), x (3000,)), drawn by DDIM with key(1)."""
  x, z = _toy_data(3000)
  config = section(
    "latent_diffusion",
    steps=800,
    width=64,
    depth=2,
    cond_features=32,
    time_features=32,
    learning_rate=2e-3,
  )
  model, history = ld.LatentDiffusion.fit(x, z, cond_kind="label", num_classes=3, config=config)
  assert history["step"][-1] == 800
  assert history["loss"][-1] < 0.7 * history["loss"][0]
  labels = np.repeat(np.arange(3, dtype=np.int32), 1000)

  @functools.cache
  def sample(num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(model.sample(labels, jax.random.key(1), num_steps)), labels

  return model, sample


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_ddim_matches_exact_gaussian_law(key, prediction):
  """With the exact denoiser of the toy law, only the sampler can be wrong."""
  x = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 3000)
  model = ExactGaussianDenoiser(prediction=prediction)
  z = ld.sample(model, {}, x, key, num_steps=250)
  mean_err, log_std_err = _errors(z, np.asarray(x))
  assert mean_err < 0.05
  assert log_std_err < 0.05


def test_first_order_steps_shrink_in_few_steps(key):
  x = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 3000)
  model = ExactGaussianDenoiser()
  _, log_std_err = _errors(ld.sample(model, {}, x, key, num_steps=10), x)
  # A known property of first-order steps (DDIM's spread is about 30% short at 10 steps);
  # see the 250-step cases above for their convergence.
  assert 0.2 < log_std_err < 0.8


def test_trained_model_matches_toy_law(toy_samples):
  mean_err, log_std_err = _errors(*toy_samples[1](250))
  # The spread is the hard part: 10-step DDIM is off by 0.45 here, a 250-step one by ~0.11.
  assert mean_err < 0.08
  assert log_std_err < 0.2


def test_more_steps_not_worse_than_ten(toy_samples):
  err10 = sum(_errors(*toy_samples[1](10)))
  err250 = sum(_errors(*toy_samples[1](250)))
  assert err250 < err10 + 0.05, (err10, err250)


def test_sample_shapes_and_determinism(toy_samples):
  model, cached = toy_samples
  a, labels = cached(10)  # shapes as in the cache: no new compilation
  b = model.sample(labels, jax.random.key(1), 10)
  c = model.sample(labels, jax.random.key(2), 10)
  assert a.shape == (3000, 2) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - np.asarray(c)).min() > 0


def test_training_is_reproducible_and_seeded():
  x, z = _toy_data(64)
  fit = functools.partial(ld.LatentDiffusion.fit, x, z, cond_kind="label", num_classes=3)
  m1, h1 = fit(config=TINY, seed=0)
  m2, h2 = fit(config=TINY, seed=0)
  m3, _ = fit(config=TINY, seed=1)
  np.testing.assert_array_equal(h1["loss"], h2["loss"])
  jax.tree.map(np.testing.assert_array_equal, m1.params, m2.params)
  leaves1, leaves3 = jax.tree.leaves(m1.params), jax.tree.leaves(m3.params)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves1, leaves3, strict=True))


def test_sampler_compiles_once_per_step_count(key):
  model = ExactGaussianDenoiser()
  x = jnp.zeros((8,), jnp.int32)
  before = ld.sample._cache_size()
  for _ in range(3):
    ld.sample(model, {}, x, key, num_steps=7)
  ld.sample(model, {}, x, jax.random.key(5), num_steps=7)
  assert ld.sample._cache_size() == before + 1


def test_image_conditions_end_to_end(key):
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(32, 4, 4, 1)).astype(np.float32)
  z = rng.normal(size=(32, 3)).astype(np.float32)
  diffusion, history = ld.LatentDiffusion.fit(x, z, cond_kind="image", config=TINY)
  assert history["loss"].shape == (2,)
  out = diffusion.sample(x[:5], key, 10)
  assert out.shape == (5, 3)
  assert np.all(np.isfinite(out))


def test_data_parallel_training_matches_single_device():
  x, z = _toy_data(64)
  mesh = parallel.make_mesh(8, 1)
  fit = functools.partial(ld.LatentDiffusion.fit, x, z, cond_kind="label", num_classes=3)
  single, h_single = fit(config=TINY)
  sharded, h_sharded = fit(config=TINY, mesh=mesh)
  np.testing.assert_allclose(h_single["loss"], h_sharded["loss"], rtol=1e-4)
  close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)  # noqa: E731
  jax.tree.map(close, single.params, sharded.params)


def test_invalid_inputs_raise():
  x, z = _toy_data(16)
  fit = functools.partial(ld.LatentDiffusion.fit, cond_kind="label", num_classes=3)
  with pytest.raises(ConfigError, match="latent_diffusion.prediction='x0'"):
    fit(x, z, config=section("latent_diffusion", prediction="x0"))
  with pytest.raises(ConfigError, match="latent_diffusion.ema_decay=1.0 must be in"):
    fit(x, z, config=section("latent_diffusion", ema_decay=1.0))
  with pytest.raises(DataError, match="N = len"):
    fit(x[:5], z, config=TINY)
  with pytest.raises(DataError, match="labels must lie"):
    ld.LatentDiffusion.fit(x, z, cond_kind="label", num_classes=2, config=TINY)
  with pytest.raises(ConfigError, match="num_steps=0"):
    ld.sample(ExactGaussianDenoiser(), {}, jnp.asarray(x), jax.random.key(0), num_steps=0)
  with pytest.raises(ConfigError, match="divisible"):
    bad = section("latent_diffusion", **{**TINY.to_dict(), "batch_size": 12})
    fit(x, z, config=bad, mesh=parallel.make_mesh(8, 1))


def test_a_diverging_run_stops_naming_the_section():
  x, z = _toy_data(16)
  bad = section("latent_diffusion", **{**TINY.to_dict(), "learning_rate": 1e30})
  with pytest.raises(
    NonFiniteError, match="latent_diffusion: non-finite .* lower latent_diffusion"
  ):
    ld.LatentDiffusion.fit(x, z, cond_kind="label", num_classes=3, config=bad)
