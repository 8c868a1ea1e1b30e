"""Tests of lsdm_jax.models.autoencoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax.errors import ConfigError
from lsdm_jax.models import autoencoder


def test_depth_to_space_moves_channels_to_pixels():
  x = jnp.arange(4.0).reshape(1, 1, 1, 4)
  y = autoencoder.depth_to_space(x, 2)
  assert y.shape == (1, 2, 2, 1)
  np.testing.assert_array_equal(y[0, :, :, 0], [[0.0, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize(
  "shape, variational",
  [((28, 28, 1), True), ((8, 8, 1), False), ((32, 32, 3), False), ((16, 24, 3), False)],
)
def test_shapes_for_any_image_size(key, shape, variational):
  model = autoencoder.Autoencoder(
    shape, latent_dim=5, features=(2, 4), hidden=8, variational=variational
  )
  params = model.init(key, jnp.zeros((1, *shape)))["params"]
  y = jax.random.uniform(key, (3, *shape))
  z = autoencoder.encode_mean(model, params, y)
  assert z.shape == (3, 5)
  out = autoencoder.decode(model, params, z)
  assert out.shape == (3, *shape)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_indivisible_image_size_is_a_config_error(key):
  model = autoencoder.Autoencoder((30, 30, 1), latent_dim=4, features=(4, 8))
  with pytest.raises(ConfigError, match="divisible by 4"):
    model.init(key, jnp.zeros((1, 30, 30, 1)))
