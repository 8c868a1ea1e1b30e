"""The Sinkhorn joint cost's weighting matters: `stage2.cond_scale` weighs φ(x) against z.

A joint point is (cond_scale · φ(x), z). With a large scale, moving mass between
conditions is dear, so transport pairs each generated (x, G(η, x)) with a real (x', z')
of nearly the same x and the loss matches p(z | x). With a tiny scale the cost only sees
z: any G with the right *marginal* law of z is optimal, nothing pulls G towards x, and
the x–z dependence is mostly lost.
Toy data: x is a random 4x4 image and z a deterministic (linear) function of x.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import parallel, stage2, wasserstein
from lsdm_jax.data.tasks import Task

TASK = Task("superres", "image", (4, 4, 1), factor=4)


def _z_of_x(x):
  """Left-minus-right and top-minus-bottom contrasts, standardised: z is fixed by x."""
  left, right = x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))
  top, bottom = x[:, :2].mean((1, 2, 3)), x[:, 2:].mean((1, 2, 3))
  z = np.stack([left - right, top - bottom], axis=1)
  return ((z - z.mean(0)) / z.std(0)).astype(np.float32)


def _toy(n=512, seed=0):
  x = np.random.default_rng(seed).uniform(size=(n, 4, 4, 1)).astype(np.float32)
  z = _z_of_x(x)
  return {"x": jnp.asarray(x), "z": jnp.asarray(z), "z_unpaired": jnp.asarray(z[:64])}


def test_loss_cannot_tell_a_shuffled_coupling_at_a_tiny_scale(key):
  """Same marginals, x–z dependence destroyed: the divergence sees it only if scaled up."""
  data = _toy(256)
  phi = wasserstein.condition_features(data["x"], "image", 0)
  shuffled = jax.random.permutation(key, data["z"])

  def div(scale):
    return float(
      wasserstein.sinkhorn_divergence(
        wasserstein.joint_points(phi, shuffled, scale),
        wasserstein.joint_points(phi, data["z"], scale),
        epsilon=0.05,
      )
    )

  tiny, large = div(0.01), div(10.0)
  assert tiny < 0.02 and large > 0.5, (tiny, large)


def _train(scale, calls=4):
  c = config_lib.base_config()
  s = c.stage2
  s.estimator, s.noise_dim, s.hidden, s.cond_features = "sinkhorn", 2, (64, 64), 16
  s.batch_size, s.steps_per_call, s.learning_rate = 128, 50, 2e-3
  s.epsilon, s.cond_scale = 0.05, scale
  mesh = parallel.make_mesh(1, 1)  # One device, as in tests/stage2_test.py.
  s2 = stage2.Stage2(c, TASK, 2, mesh)
  data = _toy()
  state, shardings = parallel.create_sharded(lambda: s2.init_state(np.zeros((1, 4, 4, 1))), mesh)
  step = s2.make_train_step(shardings, jax.tree.map(lambda _: parallel.replicated(mesh), data))
  for _ in range(calls):
    state, _ = step(state, data)
  test = _toy(400, seed=1)
  params = jax.device_get(state.params["generator"])  # Plain host arrays: one device.
  fake = np.asarray(jax.jit(s2.generate_latents)(params, test["x"], jax.random.key(3)))
  # Mean squared error to the z that x determines, over Var(z) = 1 per dimension: with unit
  # marginals it is 2 (1 - ρ), ρ the correlation of G(η, x) with z(x): 0 when G follows x,
  # 2 when G draws from the right marginal independently of x.
  rel_err = float(np.mean((fake - np.asarray(test["z"])) ** 2))
  return rel_err, fake.std(0)


@pytest.mark.slow  # Two trainings; the shuffled-coupling test above checks the scale by default.
@pytest.mark.parametrize("scale, dependent", [(10.0, True), (0.01, False)])
def test_cond_scale_keeps_or_loses_the_dependence(scale, dependent):
  rel_err, std = _train(scale)
  assert np.all(np.abs(std - 1.0) < 0.35), std  # Both match the marginal spread of z...
  if dependent:  # ...but only a large scale makes G follow x (ρ > 0.8).
    assert rel_err < 0.4, rel_err
  else:  # A tiny one keeps only what G's random start had (ρ ≈ 0.5 here, < 0.6 asserted).
    assert rel_err > 0.8, rel_err
