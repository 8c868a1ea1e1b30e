"""Tests of the supervised-only conditional VAE baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import parallel
from lsdm_jax.baselines import cvae
from lsdm_jax.errors import ConfigError, DataError

from .conftest import class_margin, section

# One small config for every test, so that they share the compilations of the step.
TINY = section(
  "cvae",
  steps=200,
  batch_size=32,
  learning_rate=3e-3,
  latent_dim=2,
  embed_features=8,
  encoder_widths=(32,),
  decoder_widths=(32,),
  steps_per_call=50,
)


def _tiny(**fields):
  return section("cvae", **{**TINY.to_dict(), **fields})


@pytest.fixture(scope="module")
def trained(toy):
  x, y = toy
  return cvae.ConditionalVAE.fit(x, y, num_classes=2, config=TINY)


def test_training_lowers_the_negative_elbo_and_learns_the_classes(trained):
  model, history = trained
  np.testing.assert_array_equal(history["step"], [50, 100, 150, 200])
  assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
  np.testing.assert_allclose(
    history["loss"], history["reconstruction"] + TINY.beta * history["kl"], rtol=1e-5
  )
  assert np.all(history["kl"] > 0)
  labels = np.repeat(np.arange(2, dtype=np.int32), 100)
  margin = class_margin(model.generate(labels, jax.random.key(1)), labels)
  # Each image is bright where its class is (true data: 0.8); untrained, ~0.
  assert margin.mean() > 0.5 and margin.min() > 0.1, (margin.mean(), margin.min())


def test_loss_fn_terms(toy, key):
  """β weighs the KL term only; the reconstruction is summed over pixels, per image."""
  x, y = toy
  model = cvae.make_model((8, 8, 1), 2, TINY)
  params = jax.jit(model.init)(key, y[:1], x[:1], key)["params"]
  loss = jax.jit(lambda p, beta: cvae.loss_fn(p, model, x[:8], y[:8], key, beta))
  loss0, m0 = loss(params, 0.0)
  loss2, m2 = loss(params, 2.0)
  np.testing.assert_allclose(loss0, m0["reconstruction"], rtol=1e-6)
  np.testing.assert_allclose(loss2, m2["reconstruction"] + 2.0 * m2["kl"], rtol=1e-6)
  # An untrained decoder gives logits near 0: about 64 · log 2 nats per 8x8 image.
  assert 30.0 < float(m0["reconstruction"]) < 70.0
  assert float(m0["kl"]) >= 0.0


def test_generate_shape_range_and_row_noise(trained, key):
  model, _ = trained
  x = jnp.asarray([0, 1, 1, 0, 1], jnp.int32)
  images = model.generate_fn(model.params, x, key)
  assert images.shape == (5, 8, 8, 1) and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  # Row i's z is fold_in(key, i): the first rows do not depend on the batch size.
  np.testing.assert_allclose(model.generate_fn(model.params, x[:2], key), images[:2], atol=1e-6)
  other = model.generate_fn(model.params, x, jax.random.key(7))
  assert np.abs(np.asarray(other) - np.asarray(images)).max() > 1e-4
  repeated = model.generate(1, key, n=3)
  assert repeated.shape == (3, 8, 8, 1)
  np.testing.assert_allclose(repeated[1], images[1], atol=1e-6)  # Row 1: label 1, same z.


def test_data_parallel_training_matches_single_device(toy):
  x, y = toy
  # One jitted call of TINY's length: the single-device run reuses the fixture's compilation.
  short = _tiny(steps=TINY.steps_per_call)
  single, h_single = cvae.ConditionalVAE.fit(x, y, num_classes=2, config=short)
  mesh = parallel.make_mesh(8, 1)
  sharded, h_sharded = cvae.ConditionalVAE.fit(x, y, num_classes=2, config=short, mesh=mesh)
  np.testing.assert_allclose(h_single["loss"], h_sharded["loss"], rtol=1e-4)
  close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)  # noqa: E731
  jax.tree.map(close, single.params, sharded.params)


def test_invalid_inputs_raise(toy, trained):
  x, y = toy
  model, _ = trained
  fit = cvae.ConditionalVAE.fit
  with pytest.raises(ConfigError, match="cvae.latent_dim=0 must be a positive number"):
    fit(x, y, num_classes=2, config=_tiny(latent_dim=0))
  with pytest.raises(ConfigError, match="cvae.beta=-1.0 must be >= 0"):
    fit(x, y, num_classes=2, config=_tiny(beta=-1.0))
  with pytest.raises(DataError, match="N = len"):
    fit(x[:5], y, num_classes=2, config=TINY)
  with pytest.raises(DataError, match="integer labels"):
    fit(x.astype(np.float32), y, num_classes=2, config=TINY)
  with pytest.raises(DataError, match="labels must lie"):
    model.generate(np.array([-1, 0]), jax.random.key(0))
