"""Tests of lsdm_jax.stage1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import loop, parallel, stage1


def _cfg(regularizer="kl", loss="bce"):
  c = config_lib.base_config().stage1
  c.features, c.hidden, c.latent_dim = (4, 8), 32, 4
  c.regularizer, c.loss, c.steps, c.learning_rate = regularizer, loss, 100, 3e-3
  c.warmup_steps = 1
  return c


@pytest.mark.parametrize(
  "regularizer, loss",
  [
    ("kl", "bce"),
    pytest.param("l2", "mse", marks=pytest.mark.slow),
    pytest.param("none", "bce", marks=pytest.mark.slow),
  ],
)
def test_train_step_lowers_the_loss_on_a_sharded_batch(mnist5k, regularizer, loss):
  cfg = _cfg(regularizer, loss)
  mesh = parallel.make_mesh(8, 1)
  model = stage1.make_model(cfg, (28, 28, 1))
  tx = stage1.make_optimizer(cfg)

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    return loop.TrainState.create(params, tx.init(params))

  state, shardings = parallel.create_sharded(init, mesh)
  step = stage1.make_train_step(model, tx, cfg, mesh, shardings, jax.random.key(1))
  images = parallel.global_batch(mesh, mnist5k.train_images[:32].astype(np.float32) / 255.0)
  losses = []
  for _ in range(15):
    state, metrics = step(state, images)
    jax.block_until_ready(state)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0]
  assert int(state.step) == 15 and int(state.nonfinite) == 0
  assert state.params["encoder"]["z"]["kernel"].sharding.is_fully_replicated


def test_batch_indices_are_a_pure_function_of_seed_and_step():
  a = stage1.batch_indices(10, 4, seed=1, step=3)
  assert np.array_equal(a, stage1.batch_indices(10, 4, seed=1, step=3))
  # Consecutive steps walk through epochs: every row once per epoch.
  rows = np.concatenate([stage1.batch_indices(10, 5, seed=1, step=s) for s in range(2)])
  assert sorted(rows.tolist()) == list(range(10))
  assert not np.array_equal(a, stage1.batch_indices(10, 4, seed=2, step=3))
