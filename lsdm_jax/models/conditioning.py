"""Embeddings of the condition x, shared by the generator, the critic and baselines.

A class label is looked up in an embedding table; a low-resolution image goes through a
small conv net. Both give a (B, features) vector.
"""

from __future__ import annotations

import flax.linen as nn
import jax


class ConditionEncoder(nn.Module):
  """x → (B, features).

  Attributes:
    kind: 'label' (x int32 (B,)) or 'image' (x float32 (B, h, w, c) in [0, 1]).
    num_classes: size of the label table (kind 'label').
    features: output width.
  """

  kind: str
  num_classes: int = 0
  features: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "label":
      return nn.Embed(self.num_classes, self.features)(x)
    h = 2.0 * x - 1.0
    h = nn.gelu(nn.Conv(32, (3, 3))(h))
    h = nn.gelu(nn.Conv(64, (3, 3))(h))
    if min(h.shape[1:3]) >= 8:
      h = nn.gelu(nn.Conv(64, (4, 4), strides=(2, 2))(h))
    h = h.reshape(h.shape[0], -1)
    return nn.gelu(nn.Dense(self.features)(h))
