"""Stage-2 critic f(x, z) → R for the Kantorovich–Rubinstein dual of W1.

No normalisation layers: the gradient penalty is taken per example, and batch-coupled
layers would make f depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.models.conditioning import ConditionedInput

ACTIVATIONS = {"gelu": nn.gelu, "leaky_relu": lambda h: nn.leaky_relu(h, 0.2)}


class Critic(nn.Module):
  """f(x, z): an MLP on concat(c(x), z) to one scalar per example.

  The first layer is a `ConditionedInput`: `condition(x)` computes the condition's
  share once, and `head(cond_part, z)` evaluates f for any z with that x, which is how
  the loss evaluates real, generated and interpolated latents of one batch.

  Attributes:
    cond_kind: 'label', 'image', or 'none' for a critic of the latent marginal.
    num_classes: label table size.
    hidden: MLP widths.
    cond_features: width of the condition embedding.
    latent_dim: size of z.
    activation: 'gelu' or 'leaky_relu' (slope 0.2). The gradient penalty differentiates
      f twice; on XLA:CPU GELU's tanh in those passes costs about a fifth of a critic
      update, leaky ReLU almost nothing.
  """

  cond_kind: str
  num_classes: int = 0
  hidden: Sequence[int] = (256, 256)
  cond_features: int = 128
  latent_dim: int = 16
  activation: str = "gelu"

  def setup(self):
    if self.cond_kind == "none":
      self.first = nn.Dense(self.hidden[0])
    else:
      self.first = ConditionedInput(
        self.cond_kind, self.num_classes, self.cond_features, self.latent_dim, self.hidden[0]
      )
    self.layers = [nn.Dense(w) for w in self.hidden[1:]]
    self.out = nn.Dense(1)

  def condition(self, x: jax.Array) -> jax.Array:
    """The condition's share of the first layer (zero width for a marginal critic)."""
    if self.cond_kind == "none":
      return jnp.zeros((x.shape[0], 0))
    return self.first.condition(x)

  def head(self, cond_part: jax.Array, z: jax.Array) -> jax.Array:
    """f for latents z (B, d) given `condition(x)` (B, width). Returns (B,)."""
    act = ACTIVATIONS[self.activation]
    h = act(self.first(z) if self.cond_kind == "none" else self.first(cond_part, z))
    for layer in self.layers:
      h = act(layer(h))
    return self.out(h)[..., 0]

  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    return self.head(self.condition(x), z)
