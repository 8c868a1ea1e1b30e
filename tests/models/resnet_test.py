"""The ResNet autoencoder (spatial latent, flat codes), its discriminator and their losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import stage1
from lsdm_jax.errors import ConfigError


def tiny(**fields):
  c = config_lib.base_config().stage1
  c.arch, c.ch, c.ch_mult, c.num_res_blocks, c.z_channels = "resnet", 8, (1, 2), 1, 2
  c.disc_features, c.disc_layers = 8, 2
  c.update(fields)
  return c


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))


def test_codes_are_flat_and_fold_to_the_spatial_latent(images):
  model = stage1.make_model(tiny(), (16, 16, 3))
  params = model.init(jax.random.key(1), images)["params"]
  assert model.latent_shape == (8, 8, 2) and model.latent_dim == 128
  mu, logvar = model.apply({"params": params}, images, method="encode")
  assert mu.shape == logvar.shape == (2, 128) and mu.dtype == jnp.float32
  out = model.apply({"params": params}, mu, method="decode")
  assert out.shape == (2, 16, 16, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
  # The top-level decoder is the same function of params['decoder'].
  alone = model.make_decoder().apply({"params": params["decoder"]}, mu)
  np.testing.assert_allclose(alone, model.apply({"params": params}, mu, method="decode_logits"))


def test_an_image_size_the_encoder_cannot_halve_is_one_config_error():
  model = stage1.make_model(tiny(ch_mult=(1, 2, 2, 2)), (12, 12, 3))
  with pytest.raises(ConfigError, match="cannot be downsampled by 8"):
    model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))


def test_bfloat16_compute_keeps_float32_parameters_and_outputs(images):
  f32, bf16 = (stage1.make_model(tiny(), (16, 16, 3), d) for d in ("float32", "bfloat16"))
  params = f32.init(jax.random.key(1), images)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16.init(jax.random.key(1), images)))
  a = f32.apply({"params": params}, images, method="encode")[0]
  b = bf16.apply({"params": params}, images, method="encode")[0]
  assert b.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(a - b))) < 0.05 * float(jnp.max(jnp.abs(a)))
