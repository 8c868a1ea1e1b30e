"""Stage-2 generator G(η, x) → z: an MLP on the noise and the condition embedding."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.models.conditioning import ConditionEncoder


class Generator(nn.Module):
  """Maps noise η (B, noise_dim) and condition x to a standardised latent (B, latent_dim).

  Attributes:
    latent_dim: size of z.
    cond_kind: 'label' or 'image' (see `ConditionEncoder`).
    num_classes: label table size.
    hidden: widths of the MLP.
    cond_features: width of the condition embedding.
  """

  latent_dim: int
  cond_kind: str
  num_classes: int = 0
  hidden: Sequence[int] = (256, 256, 256)
  cond_features: int = 128

  @nn.compact
  def __call__(self, eta: jax.Array, x: jax.Array) -> jax.Array:
    c = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)(x)
    h = jnp.concatenate([eta, c], axis=-1)
    for width in self.hidden:
      h = nn.gelu(nn.Dense(width)(h))
    return nn.Dense(self.latent_dim)(h)
