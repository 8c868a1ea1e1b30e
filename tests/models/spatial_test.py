"""The conv stage-2 networks on flat codes of a spatial latent, for each kind of condition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import stage2, wasserstein
from lsdm_jax.data.tasks import Task
from lsdm_jax.errors import ConfigError

SHAPE = (4, 4, 2)
TASKS = {
  "label": (Task("classcond", "label", (), num_classes=3), jnp.array([0, 1, 2, 0])),
  "attributes": (Task("attributes", "attributes", (3,)), jnp.eye(4, 3)),
  "image": (
    Task("superres", "image", (2, 2, 1), factor=2),
    jax.random.uniform(jax.random.key(5), (4, 2, 2, 1)),
  ),
}


def config():
  c = config_lib.base_config()
  c.stage1.arch, c.stage2.arch = "resnet", "conv"
  c.stage2.channels, c.stage2.num_blocks, c.stage2.noise_dim = 8, 1, 4
  c.stage2.cond_features, c.stage2.critic_channels = 8, (8, 8)
  return c


@pytest.mark.parametrize(
  "kind",  # Attribute and image conditions also run in the slow CelebA tiny runs.
  ["label", *(pytest.param(k, marks=pytest.mark.slow) for k in ("attributes", "image"))],
)
def test_generator_and_critic_take_any_batch_shape_and_see_the_condition(kind):
  task, x = TASKS[kind]
  s2 = stage2.Stage2(config(), task, 32, None, latent_shape=SHAPE)
  params = s2.init_state(x[:1]).params
  z = s2.generate_latents(params["generator"], x, jax.random.key(0))
  stacked = s2.generate_latents(params["generator"], jnp.stack([x, x]), jax.random.key(0), (2, 4))
  assert z.shape == (4, 32) and stacked.shape == (2, 4, 32) and z.dtype == jnp.float32
  f = wasserstein.critic_fn(s2.critics["critic"], params["critic"], x)
  scores = f(z)
  assert scores.shape == (4,)
  np.testing.assert_allclose(f(z[::2], stride=2), scores[::2], rtol=1e-5, atol=1e-6)
  # The same latents score differently under other conditions: the critic sees x.
  other = wasserstein.critic_fn(s2.critics["critic"], params["critic"], x[::-1])(z)
  assert not np.allclose(scores, other)


def test_conv_stage2_needs_a_spatial_latent():
  task, _ = TASKS["label"]
  with pytest.raises(ConfigError, match="stage1.arch='resnet'"):
    stage2.Stage2(config(), task, 32, None, latent_shape=(32,))
  bad = config()
  bad.stage1.arch = "conv"
  with pytest.raises(ConfigError, match="needs a spatial latent"):
    stage2.check_config(bad)
