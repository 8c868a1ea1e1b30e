"""Tests of lsdm_jax.sampling: one jitted call, deterministic for a key."""

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax import parallel, sampling
from lsdm_jax.models.autoencoder import Autoencoder
from lsdm_jax.models.generator import Generator


def _setup(key):
  ae = Autoencoder((8, 8, 1), latent_dim=3, features=(2, 4), hidden=8)
  ae_params = ae.init(key, jnp.zeros((1, 8, 8, 1)))["params"]
  gen = Generator(3, "label", 4, hidden=(8,), cond_features=4, noise_dim=2)
  gen_params = gen.init(key, jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))["params"]
  params = sampling.generation_params(gen_params, ae_params, np.zeros(3), np.ones(3))
  return gen, ae.make_decoder(), params


def test_generate_is_deterministic_per_key_and_row(key):
  gen, dec, params = _setup(key)
  generate = sampling.make_generate_fn(gen, dec, noise_dim=2)
  x = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
  a = generate(params, x, jax.random.key(5))
  assert a.shape == (8, 8, 8, 1) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, generate(params, x, jax.random.key(5)))
  assert not np.allclose(a, generate(params, x, jax.random.key(6)))
  # Row i's noise depends on (key, i) only, not on how many rows are generated.
  np.testing.assert_allclose(a[:4], generate(params, x[:4], jax.random.key(5)), atol=1e-6)
  # Same label, different rows: different noise, different images.
  assert not np.allclose(a[0], a[4])


def test_sharded_generate_matches_single_device(key):
  gen, dec, params = _setup(key)
  x = jnp.arange(16) % 4
  single = sampling.make_generate_fn(gen, dec, noise_dim=2)(params, x, key)
  mesh = parallel.make_mesh(8, 1)
  sharded = sampling.make_generate_fn(gen, dec, noise_dim=2, mesh=mesh)
  out = sharded(params, x, key)
  assert out.sharding.spec[0] == parallel.DATA
  np.testing.assert_allclose(out, single, atol=1e-5)
  batched = sampling.generate_batched(
    sharded, params, np.arange(13) % 4, key, batch_size=8, multiple=8
  )
  assert batched.shape == (13, 8, 8, 1)
