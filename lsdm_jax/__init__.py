"""lsdm-jax: Latent Space Distribution Matching in JAX/Flax.

Semi-supervised conditional generation: an autoencoder learns a latent space from all
images (paired and unpaired), a one-step generator G(η, x) matches the joint law of
(x, E(y)) in W1 on the paired data, and y = D(G(η, x)) generates in one pass.
"""

__version__ = "0.1.0"


# The imports below are lazy on purpose: `import lsdm_jax.config` (every experiment config
# does it) should not import JAX, Flax, Orbax and OTT-JAX.


def load(workdir, **kwargs):
  """Loads a trained run; see `lsdm_jax.model.load`."""
  from lsdm_jax.model import load as _load

  return _load(workdir, **kwargs)


def train_and_evaluate(config, workdir, **kwargs):
  """Trains every stage and evaluates; see `lsdm_jax.train.train_and_evaluate`."""
  from lsdm_jax.train import train_and_evaluate as _run

  return _run(config, workdir, **kwargs)


__all__ = ["load", "train_and_evaluate"]
