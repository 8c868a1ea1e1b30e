"""Stage-2 generator and critic for spatial latents (`stage2.arch='conv'`).

Latents stay flat, (B, h·w·c), everywhere outside these modules; here they are folded
to `latent_shape` (the stage-1 `ResnetAutoencoder.latent_shape`) and treated as feature
maps. Conditions enter in two ways:

* label or attribute vector: an embedding c(x) that sets a per-channel scale and shift of
  every residual block (FiLM, i.e. adaptive GroupNorm) in the generator, and a projection
  term ⟨c(x), φ(z)⟩ in the critic (Miyato & Koyama's projection discriminator);
* low-resolution image: resized to the latent's h x w and concatenated as channels at the
  input of both networks (the latent and the input are aligned maps for superres), and
  also embedded for FiLM in the generator.

The critic has no normalisation layers: the gradient penalty is per example. Both
networks compute in `dtype` (bfloat16 on GPU/TPU) with float32 parameters and float32
outputs. Like the MLP networks, they accept any leading batch shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.models.conditioning import ConditionEncoder
from lsdm_jax.models.critic import ACTIVATIONS
from lsdm_jax.models.resnet import _groups


def _resize_to(x: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Condition images (B, h', w', c) → (B, h, w, c) in [-1, 1] at the latent's size."""
  b, _, _, c = x.shape
  return jax.image.resize(2.0 * x - 1.0, (b, shape[0], shape[1], c), "linear")


class FiLMBlock(nn.Module):
  """A residual block whose GroupNorms are modulated per channel by the condition."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
    def modulated(x, name):
      x = nn.GroupNorm(_groups(x.shape[-1]), use_scale=False, use_bias=False, dtype=self.dtype)(x)
      scale, shift = jnp.split(
        nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype, name=name)(
          c
        ),
        2,
        axis=-1,
      )
      return x * (1.0 + scale[:, None, None]) + shift[:, None, None]

    y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(modulated(h, "film1")))
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(modulated(y, "film2")))
    return h + y


class ConvGenerator(nn.Module):
  """G(η, x) → flat standardised latent (..., h·w·c), a conv net on the latent grid.

  Attributes:
    latent_shape: (h, w, c) of the latent.
    cond_kind: 'label', 'attributes' or 'image'.
    num_classes: label table size.
    cond_features: width of the condition embedding.
    noise_dim: size of η.
    channels: width of the feature maps.
    num_blocks: FiLM residual blocks.
    dtype: compute dtype.
  """

  latent_shape: Sequence[int]
  cond_kind: str
  num_classes: int = 0
  cond_features: int = 128
  noise_dim: int = 64
  channels: int = 128
  num_blocks: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, eta: jax.Array, x: jax.Array) -> jax.Array:
    lead = eta.shape[:-1]
    eta = eta.reshape(-1, eta.shape[-1])
    x = x.reshape(-1, *x.shape[len(lead) :])
    h, w, c = self.latent_shape
    emb = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)(x)
    emb = nn.swish(nn.Dense(self.cond_features, dtype=self.dtype)(emb))
    stem = nn.Dense(h * w * self.channels, dtype=self.dtype)(jnp.concatenate([eta, emb], -1))
    feats = stem.reshape(-1, h, w, self.channels)
    if self.cond_kind == "image":
      feats = jnp.concatenate([feats, _resize_to(x, (h, w)).astype(feats.dtype)], -1)
      feats = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(feats)
    for _ in range(self.num_blocks):
      feats = FiLMBlock(self.channels, self.dtype)(feats, emb)
    feats = nn.swish(nn.GroupNorm(_groups(self.channels), dtype=self.dtype)(feats))
    z = nn.Conv(c, (3, 3), dtype=self.dtype)(feats).astype(jnp.float32)
    return z.reshape(*lead, h * w * c)


class ConvCritic(nn.Module):
  """f(x, z) → R on the latent grid; `condition` and `head` as the MLP `Critic`'s.

  Attributes:
    latent_shape: (h, w, c) of the latent.
    cond_kind: 'label', 'attributes', 'image', or 'none' (a critic of the marginal).
    num_classes: label table size.
    cond_features: width of the condition embedding.
    channels: channels per conv stage; every stage after the first halves the grid
      (while it is larger than 2x2).
    activation: 'gelu' or 'leaky_relu'.
    dtype: compute dtype.
  """

  latent_shape: Sequence[int]
  cond_kind: str
  num_classes: int = 0
  cond_features: int = 128
  channels: Sequence[int] = (64, 128, 256)
  activation: str = "leaky_relu"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.cond_kind in ("label", "attributes"):
      self.embed = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)
    size = min(self.latent_shape[:2])
    convs = []
    for i, ch in enumerate(self.channels):
      stride = 2 if i > 0 and size > 2 else 1
      size = math.ceil(size / stride)
      convs.append(nn.Conv(ch, (3, 3), (stride, stride), dtype=self.dtype))
    self.convs = convs
    self.dense = nn.Dense(self.channels[-1], dtype=self.dtype)
    self.out = nn.Dense(1, dtype=jnp.float32)  # The score in float32 in every dtype.
    if self.cond_kind in ("label", "attributes"):
      self.project = nn.Dense(self.channels[-1], use_bias=False, dtype=self.dtype)

  def condition(self, x: jax.Array) -> jax.Array:
    """The condition's part, computed once per batch: an embedding, a map, or (B, 0)."""
    if self.cond_kind in ("label", "attributes"):
      return self.embed(x)
    if self.cond_kind == "image":
      return _resize_to(x, self.latent_shape[:2])
    return jnp.zeros((x.shape[0], 0))

  def head(self, cond: jax.Array, z: jax.Array) -> jax.Array:
    """f for flat latents z (B, h·w·c) given `condition(x)`. Returns (B,) float32."""
    act = ACTIVATIONS[self.activation]
    h = z.reshape(-1, *self.latent_shape).astype(self.dtype)
    if self.cond_kind == "image":
      h = jnp.concatenate([h, cond.astype(self.dtype)], -1)
    for conv in self.convs:
      h = act(conv(h))
    h = act(self.dense(h.reshape(h.shape[0], -1))).astype(jnp.float32)
    out = self.out(h)[..., 0]
    if self.cond_kind in ("label", "attributes"):
      projected = self.project(cond.astype(self.dtype)).astype(jnp.float32)
      out = out + jnp.sum(projected * h, axis=-1)
    return out

  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    return self.head(self.condition(x), z)
