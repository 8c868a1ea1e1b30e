"""Tests of lsdm_jax.stage1."""

import functools

import jax
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import loop, parallel, stage1
from lsdm_jax.errors import ConfigError


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
  tx = loop.make_optimizer(cfg)
  init = functools.partial(stage1.init_state, model, tx, jax.random.key(0), (28, 28, 1))
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


def test_check_config_names_the_field_and_the_fix():
  c = config_lib.base_config()
  stage1.check_config(c)  # The defaults pass.
  for field, value, message in [
    ("arch", "vit", r"stage1.arch='vit' is not one of \('conv', 'resnet'\)"),
    ("schedule", "step", r"stage1.schedule='step' is not one of"),
    ("disc_weight", 0.5, r"stage1.disc_weight > 0 needs stage1.arch='resnet'"),
    ("log_every", 0, r"stage1.log_every=0 must be a positive integer"),
    ("batch_size", 12, r"stage1.batch_size=12"),
  ]:
    bad = config_lib.base_config()
    bad.stage1[field] = value
    with pytest.raises(ConfigError, match=message):
      stage1.check_config(bad)
