"""A tiny config for smoke tests: a few seconds of each stage on CPU."""

from lsdm_jax.config import base_config


def get_config():
  config = base_config()
  config.data.n_paired = 100
  config.data.n_unpaired = 300
  config.stage1.features = (8, 16)
  config.stage1.hidden = 64
  config.stage1.latent_dim = 8
  config.stage1.steps = 20
  config.stage1.batch_size = 32
  config.stage1.log_every = 10
  config.stage1.save_every = 10
  config.stage2.noise_dim = 8
  config.stage2.hidden = (64, 64)
  config.stage2.critic_hidden = (64, 64)
  config.stage2.cond_features = 32
  config.stage2.steps = 20
  config.stage2.batch_size = 64
  config.stage2.steps_per_call = 5
  config.stage2.log_every = 10
  config.stage2.save_every = 10
  config.stage2.n_critic = 2
  config.eval.num_per_class = 10
  config.eval.grid_per_class = 4
  return config
