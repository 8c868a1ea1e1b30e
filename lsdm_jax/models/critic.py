"""Stage-2 critic f(x, z) → R for the Kantorovich–Rubinstein dual of W1.

No normalisation layers: the gradient penalty is taken per example, and batch-coupled
layers would make f depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.models.conditioning import ConditionEncoder


class Critic(nn.Module):
  """f(x, z): condition embedding and latent through an MLP to one scalar per example."""

  cond_kind: str  # 'label', 'image', or 'none' for a critic of the latent marginal.
  num_classes: int = 0
  hidden: Sequence[int] = (256, 256)
  cond_features: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    h = z
    if self.cond_kind != "none":
      c = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)(x)
      h = jnp.concatenate([c, z], axis=-1)
    for width in self.hidden:
      h = nn.gelu(nn.Dense(width)(h))
    return nn.Dense(1)(h)[:, 0]
