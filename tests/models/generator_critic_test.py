"""Tests of lsdm_jax.models.generator, critic and conditioning."""

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax.models.critic import Critic
from lsdm_jax.models.generator import Generator


def test_generator_and_critic_shapes_for_labels_and_images(key):
  for kind, x in (("label", jnp.array([0, 3, 9])), ("image", jnp.zeros((3, 7, 7, 1)))):
    gen = Generator(
      latent_dim=6, cond_kind=kind, num_classes=10, hidden=(16, 16), cond_features=8, noise_dim=4
    )
    eta = jax.random.normal(key, (3, 4))
    params = gen.init(key, eta, x)["params"]
    z = gen.apply({"params": params}, eta, x)
    assert z.shape == (3, 6)
    critic = Critic(kind, 10, hidden=(16,), cond_features=8, latent_dim=6)
    cp = critic.init(key, x, z)["params"]
    assert critic.apply({"params": cp}, x, z).shape == (3,)


def test_generator_output_depends_on_condition_and_noise(key):
  gen = Generator(latent_dim=4, cond_kind="label", num_classes=3, hidden=(16,), noise_dim=4)
  eta = jax.random.normal(key, (2, 4))
  params = gen.init(key, eta, jnp.array([0, 1]))["params"]
  a = gen.apply({"params": params}, eta, jnp.array([0, 0]))
  b = gen.apply({"params": params}, eta, jnp.array([1, 1]))
  assert not jnp.allclose(a, b)
  assert not jnp.allclose(a[0], a[1])  # Different η, same label.


def test_marginal_critic_ignores_condition(key):
  critic = Critic("none", hidden=(8,), latent_dim=3)
  z = jax.random.normal(key, (4, 3))
  params = critic.init(key, jnp.zeros(4, jnp.int32), z)["params"]
  a = critic.apply({"params": params}, jnp.zeros(4, jnp.int32), z)
  b = critic.apply({"params": params}, jnp.ones(4, jnp.int32), z)
  assert jnp.array_equal(a, b)


def test_split_first_layer_equals_a_dense_layer_on_the_concatenation(key):
  """c(x) @ W_c + z @ W_z + b is the dense layer on concat(c(x), z) it replaces."""
  critic = Critic("label", 5, hidden=(8, 8), cond_features=6, latent_dim=3)
  x, z = jnp.array([0, 4, 2]), jax.random.normal(key, (3, 3))
  p = critic.init(key, x, z)["params"]
  first = p["first"]
  c = first["embedding"][x]
  kernel = jnp.concatenate([first["cond_kernel"], first["input_kernel"]], axis=0)
  h = jax.nn.gelu(jnp.concatenate([c, z], axis=-1) @ kernel + first["bias"][None])
  for name in ("layers_0", "out"):
    h = h @ p[name]["kernel"] + p[name]["bias"][None]
    h = jax.nn.gelu(h) if name != "out" else h
  np.testing.assert_allclose(critic.apply({"params": p}, x, z), h[:, 0], rtol=1e-5, atol=1e-6)
  # The condition's share, computed once, serves any batch of latents for the same x.
  cond = critic.apply({"params": p}, x, method=Critic.condition)
  zz = jnp.stack([z, 2 * z])
  f = critic.apply({"params": p}, jnp.broadcast_to(cond, (2, 3, 8)), zz, method=Critic.head)
  np.testing.assert_allclose(f[1], critic.apply({"params": p}, x, 2 * z), rtol=1e-5, atol=1e-6)


def test_leaky_relu_critic_is_the_same_network_with_another_activation(key):
  x, z = jnp.array([0, 4, 2]), 3.0 * jax.random.normal(key, (3, 3))
  gelu = Critic("label", 5, hidden=(8,), cond_features=6, latent_dim=3)
  leaky = Critic("label", 5, hidden=(8,), cond_features=6, latent_dim=3, activation="leaky_relu")
  p = gelu.init(key, x, z)["params"]
  assert jax.tree.structure(p) == jax.tree.structure(leaky.init(key, x, z)["params"])
  first = p["first"]
  pre = (
    first["embedding"][x] @ first["cond_kernel"] + z @ first["input_kernel"] + first["bias"][None]
  )
  want = jnp.where(pre > 0, pre, 0.2 * pre) @ p["out"]["kernel"] + p["out"]["bias"][None]
  np.testing.assert_allclose(leaky.apply({"params": p}, x, z), want[:, 0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(gelu.apply({"params": p}, x, z), want[:, 0], atol=1e-3)
