"""Embeddings of the condition x, shared by the generator, the critic and baselines.

A class label is looked up in an embedding table; a vector of binary attributes or a
low-resolution image goes through a small MLP (on the pixels, for an image). Each gives a
(B, features) vector.

Why an MLP and not a conv net for images: conditions are small (7x7 or 14x14 digits,
16x16 faces), so a dense layer sees every pixel at little cost, and stage 2
differentiates through this net at every critic step. A two-conv encoder made
image-conditioned stage 2 ~300x slower on XLA:CPU (0.16 generator steps/s at batch 256:
the kernel gradient of a 3x3 conv on 7x7 maps took 0.6 s), and even as slices and
matmuls it cost ~10x the critic itself (1.3M multiply-adds per example against 0.1M).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConditionEncoder(nn.Module):
  """x → (B, features).

  Attributes:
    kind: 'label' (x int32 (...,)), 'attributes' (x float32 (..., K) in {0, 1}) or
      'image' (x float32 (..., h, w, c) in [0, 1]).
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
    if self.kind == "image":
      h = h.reshape(*x.shape[:-3], -1)
    h = nn.gelu(nn.Dense(2 * self.features)(h))
    return nn.gelu(nn.Dense(self.features)(h))


def _slice_of_fan_in(total_fan_in: int):
  """lecun_normal for a block of rows of a (total_fan_in, width) kernel.

  The first dense layer over concat(c(x), v) is split into c(x) @ W_c + v @ W_v; both
  blocks are initialised as slices of one kernel with the joint fan-in, so the split
  layer starts with the same distribution as the concatenated one.
  """

  def init(key, shape, dtype=jnp.float32):
    full = nn.initializers.lecun_normal()(key, (total_fan_in, shape[1]), dtype)
    return full[: shape[0]]

  return init


class ConditionedInput(nn.Module):
  """The first dense layer of an MLP on concat(c(x), v), computed as two parts.

  `condition(x)` gives the condition's share c(x) @ W_c (computed once per batch of x,
  and for labels as a (num_classes, width) table: a lookup per example, no matmul);
  `__call__(cond_part, v)` adds v @ W_v + b. Generator and critic call `condition` once
  and reuse it, e.g. for the real, generated and interpolated latents of the critic's
  loss, which all share the batch's x.

  Attributes:
    kind: 'label' or 'image' (see `ConditionEncoder`).
    num_classes: label table size.
    cond_features: width of c(x).
    input_dim: width of v (fixes the joint fan-in of the initialisation).
    width: output width.
  """

  kind: str
  num_classes: int
  cond_features: int
  input_dim: int
  width: int

  def setup(self):
    init = _slice_of_fan_in(self.cond_features + self.input_dim)
    if self.kind == "label":
      self.table = self.param(
        "embedding",
        nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0),
        (self.num_classes, self.cond_features),
      )
    else:
      self.encoder = ConditionEncoder(self.kind, self.num_classes, self.cond_features)
    self.cond_kernel = self.param("cond_kernel", init, (self.cond_features, self.width))
    self.input_kernel = self.param("input_kernel", init, (self.input_dim, self.width))
    self.bias = self.param("bias", nn.initializers.zeros, (self.width,))

  def condition(self, x: jax.Array) -> jax.Array:
    """x → c(x) @ W_c, (B, width)."""
    if self.kind == "label":
      return jnp.take(self.table @ self.cond_kernel, x, axis=0)
    return self.encoder(x) @ self.cond_kernel

  def __call__(self, cond_part: jax.Array, v: jax.Array) -> jax.Array:
    out = cond_part + v @ self.input_kernel
    return out + jnp.broadcast_to(self.bias, out.shape)
