"""Tests of the pixel-space Wasserstein generator baseline (WGAN-GP, paired data only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import parallel
from lsdm_jax.baselines import pixel_wgcs as pw
from lsdm_jax.errors import ConfigError, DataError

from .conftest import class_margin, section

# One small config for every test, so that they share the compilations of the step.
TINY = section(
  "pixel_wgcs",
  steps=200,
  batch_size=32,
  n_critic=2,
  noise_dim=4,
  embed_features=8,
  widths=(32,),
  critic_widths=(32,),
  steps_per_call=50,
  learning_rate=1e-3,
  critic_learning_rate=1e-3,
)


def _tiny(**fields):
  return section("pixel_wgcs", **{**TINY.to_dict(), **fields})


@pytest.fixture(scope="module")
def trained(toy):
  x, y = toy
  return pw.PixelWGCS.fit(x, y, num_classes=2, config=TINY)


def test_training_learns_the_class_conditional_images(trained):
  model, history = trained
  np.testing.assert_array_equal(history["step"], [50, 100, 150, 200])
  assert np.all(np.isfinite(history["w1_critic"])) and np.all(np.isfinite(history["gen_loss"]))
  labels = np.repeat(np.arange(2, dtype=np.int32), 100)
  images = model.generate(labels, jax.random.key(1))
  margin = class_margin(images, labels)
  # Each image is bright where its class is (true data: 0.8); untrained G gives ~0.
  assert margin.mean() > 0.5 and margin.min() > 0.1, (margin.mean(), margin.min())


def test_generate_shape_range_and_row_noise(trained, key):
  model, _ = trained
  x = jnp.asarray([0, 1, 1, 0, 1], jnp.int32)
  images = model.generate_fn(model.params, x, key)
  assert images.shape == (5, 8, 8, 1) and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  # Row i's noise is fold_in(key, i): the first rows do not depend on the batch size.
  np.testing.assert_allclose(model.generate_fn(model.params, x[:2], key), images[:2], atol=1e-6)
  other = model.generate_fn(model.params, x, jax.random.key(7))
  assert np.abs(np.asarray(other) - np.asarray(images)).max() > 1e-3
  repeated = model.generate(1, key, n=3)
  assert repeated.shape == (3, 8, 8, 1)
  np.testing.assert_allclose(repeated[1], images[1], atol=1e-6)  # Row 1: label 1, same noise.


def test_critic_has_no_batch_coupling(toy, key):
  """The critic has no batch coupling: f of a batch is f of each row alone."""
  x, y = toy
  _, critic = pw.make_models((8, 8, 1), 2, TINY)
  params = jax.jit(critic.init)(key, x[:1], y[:1])["params"]
  batch = jax.jit(critic.apply)({"params": params}, x[:6], y[:6])
  one = jax.jit(jax.vmap(lambda xi, yi: critic.apply({"params": params}, xi[None], yi[None])[0]))
  assert batch.shape == (6,)
  np.testing.assert_allclose(batch, one(x[:6], y[:6]), rtol=1e-5, atol=1e-6)


def test_data_parallel_training_matches_single_device(toy):
  x, y = toy
  # One jitted call of TINY's length: the single-device run reuses the fixture's compilation.
  short = _tiny(steps=TINY.steps_per_call)
  single, h_single = pw.PixelWGCS.fit(x, y, num_classes=2, config=short)
  mesh = parallel.make_mesh(8, 1)
  sharded, h_sharded = pw.PixelWGCS.fit(x, y, num_classes=2, config=short, mesh=mesh)
  np.testing.assert_allclose(h_single["w1_critic"], h_sharded["w1_critic"], rtol=1e-3, atol=1e-4)
  close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4)  # noqa: E731
  jax.tree.map(close, single.params, sharded.params)


def test_invalid_inputs_raise(toy, trained):
  x, y = toy
  model, _ = trained
  fit = pw.PixelWGCS.fit
  with pytest.raises(ConfigError, match="pixel_wgcs.n_critic=0 must be a positive number"):
    fit(x, y, num_classes=2, config=_tiny(n_critic=0))
  with pytest.raises(ConfigError, match=r"pixel_wgcs.b1=1.0 must be in \[0, 1\)"):
    fit(x, y, num_classes=2, config=_tiny(b1=1.0))
  with pytest.raises(ConfigError, match=r"pixel_wgcs.widths=\(\) must be one or more"):
    fit(x, y, num_classes=2, config=_tiny(widths=()))
  with pytest.raises(DataError, match="N = len"):
    fit(x[:5], y, num_classes=2, config=TINY)
  with pytest.raises(DataError, match="labels must lie"):
    fit(x + 1, y, num_classes=2, config=TINY)
  with pytest.raises(DataError, match=r"\[0, 1\]"):
    fit(x, 2.0 * y, num_classes=2, config=TINY)
  with pytest.raises(DataError, match="labels must lie"):
    model.generate([0, 2], jax.random.key(0))
  with pytest.raises(ConfigError, match="divisible"):
    fit(x, y, num_classes=2, config=_tiny(batch_size=12), mesh=parallel.make_mesh(8, 1))
