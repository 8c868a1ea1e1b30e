"""Stage-2 generator G(η, x) → z: an MLP on the noise and the condition embedding."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.models.conditioning import ConditionedInput


def noise_per_row(key: jax.Array, rows: int, dim: int) -> jax.Array:
  """(rows, dim) standard normal, row i from fold_in(key, i): a sample depends on its key
  and row only, not on how many rows are generated together."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (dim,)))(jnp.arange(rows))


class Generator(nn.Module):
  """Maps noise η (B, noise_dim) and condition x to a standardised latent (B, latent_dim).

  An MLP on concat(η, c(x)); its first layer is a `ConditionedInput`, so that the
  condition's share can be computed once (`condition`) and reused (`from_condition`).

  Attributes:
    latent_dim: size of z.
    cond_kind: 'label' or 'image' (see `ConditionEncoder`).
    num_classes: label table size.
    hidden: widths of the MLP.
    cond_features: width of the condition embedding.
    noise_dim: size of η.
  """

  latent_dim: int
  cond_kind: str
  num_classes: int = 0
  hidden: Sequence[int] = (256, 256, 256)
  cond_features: int = 128
  noise_dim: int = 16

  def setup(self):
    self.first = ConditionedInput(
      self.cond_kind, self.num_classes, self.cond_features, self.noise_dim, self.hidden[0]
    )
    self.layers = [nn.Dense(w) for w in self.hidden[1:]]
    self.out = nn.Dense(self.latent_dim)

  def condition(self, x: jax.Array) -> jax.Array:
    """The condition's share of the first layer, (..., hidden[0])."""
    return self.first.condition(x)

  def from_condition(self, cond_part: jax.Array, eta: jax.Array) -> jax.Array:
    h = nn.gelu(self.first(cond_part, eta))
    for layer in self.layers:
      h = nn.gelu(layer(h))
    return self.out(h)

  def __call__(self, eta: jax.Array, x: jax.Array) -> jax.Array:
    """Args: eta (..., noise_dim), x (...,) labels or (..., h, w, c) images."""
    return self.from_condition(self.condition(x), eta)
