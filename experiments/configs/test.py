"""A tiny config for smoke tests: a few seconds of each stage on CPU.

The argument after ':' is a variant of `mnist5k_classcond.py` (its estimator and
semi-supervised mode) at these sizes. Its studies `unpaired` and `semi` are the grids of
`mnist5k_classcond.py` at tiny sizes, for the tests of the study runner: the numbers mean
nothing.
"""

from experiments.configs import mnist5k_classcond
from lsdm_jax.config import base_config

# The baselines at tiny sizes.
TINY_BASELINES = {
  "latent_diffusion.steps": 10,
  "latent_diffusion.batch_size": 16,
  "latent_diffusion.width": 16,
  "latent_diffusion.depth": 1,
  "latent_diffusion.cond_features": 8,
  "latent_diffusion.time_features": 8,
  "latent_diffusion.warmup_steps": 2,
  "latent_diffusion.steps_per_call": 5,
  "consistency.steps": 4,
  "pixel_wgcs.steps": 4,
  "pixel_wgcs.batch_size": 16,
  "pixel_wgcs.widths": (32,),
  "pixel_wgcs.critic_widths": (32,),
  "pixel_wgcs.n_critic": 1,
  "pixel_wgcs.noise_dim": 4,
  "pixel_wgcs.embed_features": 4,
  "pixel_wgcs.steps_per_call": 2,
  "cvae.steps": 4,
  "cvae.batch_size": 16,
  "cvae.latent_dim": 4,
  "cvae.embed_features": 4,
  "cvae.encoder_widths": (32,),
  "cvae.decoder_widths": (32,),
  "cvae.steps_per_call": 2,
}


def get_config(variant: str = "critic"):
  config = base_config()
  reference = mnist5k_classcond.get_config(variant)
  config.stage2.estimator = reference.stage2.estimator
  config.semi.enabled = reference.semi.enabled
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
  config.eval.cas_steps = 20  # The code path, not a meaningful score.
  config.eval.grid_per_class = 4
  return config


def sweep(add, study: str):
  """`mnist5k_classcond.py`'s `unpaired` and `semi` grids at tiny sizes."""
  if study == "unpaired":
    mnist5k_classcond.unpaired_grid(
      add,
      n_paired=(100,),
      n_unpaired=(0, 300),
      seeds=(0,),
      estimators=("critic",),
      extension=(("critic", 100),),
      baselines=(100,),
      ddim_steps=(2,),
      fields=TINY_BASELINES,
      timing_repeats=1,
    )
  elif study == "semi":
    mnist5k_classcond.semi_grid(
      add,
      seeds=(0,),
      fields={**TINY_BASELINES, "latent_diffusion.steps": 20},
      oracle_paired=400,
      distill_steps=(1,),
    )
  else:
    raise ValueError(f"unknown study {study!r}; use unpaired or semi")
