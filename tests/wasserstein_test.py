"""Tests of lsdm_jax.wasserstein on Gaussians whose W1 is known.

Two Gaussians with the same covariance that differ by a shift m have W1 = ‖m‖: the
translation coupling costs ‖m‖, and no coupling costs less than ‖E X − E Y‖.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lsdm_jax import wasserstein


def _clouds(key, n=512, d=4, shift=1.5):
  k1, k2 = jax.random.split(key)
  m = jnp.zeros(d).at[0].set(shift)
  return jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d)) + m[None]


def test_sinkhorn_estimates_w1_of_shifted_gaussians(key):
  a, b = _clouds(key)
  div = float(wasserstein.sinkhorn_divergence(a, b, epsilon=0.05))
  assert div == pytest.approx(1.5, abs=0.25)
  # Zero on identical clouds, non-negative, and larger for a larger shift.
  assert abs(float(wasserstein.sinkhorn_divergence(a, a, epsilon=0.05))) < 1e-3
  far = float(wasserstein.sinkhorn_divergence(a, b + 2.0, epsilon=0.05))
  assert far > div >= 0.0


def test_sinkhorn_gradients_are_finite_and_point_the_right_way(key):
  a, b = _clouds(key, n=128)
  g = jax.grad(lambda x: wasserstein.sinkhorn_divergence(x, b, epsilon=0.1))(a)
  assert bool(jnp.all(jnp.isfinite(g)))
  # Moving a towards b (positive first coordinate) lowers the divergence.
  assert float(jnp.mean(g[:, 0])) < 0


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x, z):
    h = nn.gelu(nn.Dense(64)(z))
    h = nn.gelu(nn.Dense(64)(h))
    return nn.Dense(1)(h)[..., 0]


def test_critic_dual_estimates_w1_of_shifted_gaussians(key):
  a, b = _clouds(key, n=2048, d=2, shift=2.0)
  critic = _MLP()
  params = critic.init(key, None, a[:256])
  tx = optax.adam(2e-3, b1=0.5, b2=0.9)
  opt = tx.init(params)

  def step(carry, k):
    params, opt = carry
    k1, k2, k3 = jax.random.split(k, 3)
    real = a[jax.random.randint(k1, (256,), 0, len(a))]
    fake = b[jax.random.randint(k2, (256,), 0, len(b))]

    def loss(p):
      fn = lambda zz: critic.apply(p, None, zz)  # noqa: E731
      return wasserstein.critic_loss(fn, real, fake, k3, gp_weight=10.0)

    (_, m), g = jax.value_and_grad(loss, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, upd), opt), m["w1_critic"]

  (params, _), w1 = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
    (params, opt), jax.random.split(key, 1500)
  )
  estimate = float(jnp.mean(w1[-200:]))
  assert estimate == pytest.approx(2.0, abs=0.3)


def test_strided_penalty_is_the_penalty_of_every_kth_example(key):
  """gp_stride=2: the dual terms use the whole batch, the penalty every other example
  with its own condition (a conditional critic whose slope depends on x)."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  x = jax.random.normal(k1, (8, 1))
  real, fake = jax.random.normal(k2, (8, 3)), jax.random.normal(k3, (8, 3)) + 1.0

  def critic_fn(z, stride=1):
    return jnp.sum(z, -1) * (1.0 + 3.0 * jnp.tanh(x[::stride, 0]))

  _, full = wasserstein.critic_loss(critic_fn, real, fake, k4, gp_weight=10.0)
  _, strided = wasserstein.critic_loss(critic_fn, real, fake, k4, gp_weight=10.0, gp_stride=2)
  expected = wasserstein.gradient_penalty(
    lambda z: critic_fn(z, stride=2), real[::2], fake[::2], k4
  )
  assert float(strided["gradient_penalty"]) == pytest.approx(float(expected), rel=1e-6)
  # ∇_z f = (1 + 3 tanh x)·1: the penalty is a known function of the kept conditions,
  # so it differs from the full batch's, while the dual W1 term does not change.
  slopes = np.sqrt(3.0) * np.abs(1.0 + 3.0 * np.tanh(np.asarray(x[::2, 0])))
  assert float(strided["gradient_penalty"]) == pytest.approx(np.mean((slopes - 1) ** 2), 1e-4)
  assert float(strided["gradient_penalty"]) != pytest.approx(float(full["gradient_penalty"]))
  assert float(strided["w1_critic"]) == float(full["w1_critic"])


def test_condition_features_and_joint_points():
  phi = wasserstein.condition_features(jnp.array([0, 2]), "label", 3)
  np.testing.assert_array_equal(phi, [[1, 0, 0], [0, 0, 1]])
  img = wasserstein.condition_features(jnp.ones((2, 4, 4, 1)), "image", 0)
  np.testing.assert_allclose(jnp.linalg.norm(img, axis=-1), 1.0, rtol=1e-6)
  pts = wasserstein.joint_points(phi, jnp.zeros((2, 5)), 10.0)
  assert pts.shape == (2, 8) and float(pts.max()) == 10.0


# --------------------------------------------------------------------------- joint W1


@pytest.fixture
def cloud():
  """300 points of 3 classes whose features are centred at the class index."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  feats = labels[:, None] * 1.0 + 0.3 * rng.normal(size=(300, 4))
  return labels.astype(np.int32), feats.astype(np.float32)


def test_joint_w1_is_zero_on_equal_clouds_and_nonnegative(cloud):
  labels, feats = cloud
  w1 = lambda la, fa, lb, fb: wasserstein.joint_w1(la, fa, lb, fb, num_classes=3, epsilon=0.05)  # noqa: E731
  assert w1(labels, feats, labels, feats) == pytest.approx(0.0, abs=1e-4)
  rng = np.random.default_rng(1)
  other = feats + 0.3 * rng.normal(size=feats.shape).astype(np.float32)
  assert w1(labels, feats, labels, other) >= 0.0


def test_joint_w1_grows_when_labels_are_permuted(cloud):
  labels, feats = cloud
  half = len(labels) // 2
  w1 = (
    lambda lb: wasserstein.joint_w1(  # noqa: E731
      labels[:half], feats[:half], lb, feats[half:], num_classes=3, epsilon=0.05
    )
  )
  permuted = np.random.default_rng(2).permutation(labels[half:])
  assert w1(permuted) > 2 * w1(labels[half:])


def test_joint_w1_on_dense_costs_matches_point_clouds(cloud):
  labels, feats = cloud
  shifted = feats + 0.5
  kw = {"num_classes": 3, "epsilon": 0.05}
  points = wasserstein.joint_w1(labels, feats, labels, shifted, **kw)
  dense = wasserstein.joint_w1(labels, feats, labels, shifted, dense_above=0, **kw)
  assert dense == pytest.approx(points, rel=1e-3)
