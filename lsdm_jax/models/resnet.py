"""A ResNet autoencoder with a spatial latent, KL-regularised as latent diffusion's.

The architecture of latent diffusion's KL autoencoders (Rombach et al. 2022, `AutoencoderKL`
with its `Encoder`/`Decoder`): a 3x3 stem, `len(ch_mult)` resolution levels of
`num_res_blocks` residual blocks (GroupNorm, swish, 3x3 conv), a stride-2 convolution
between levels, a middle of block → self-attention → block at the lowest resolution, and a
3x3 head to `2·z_channels` (mean and log-variance). An image of H x W gives a latent of
H/f x W/f x z_channels, f = 2^(len(ch_mult) − 1) (32x32x3 → 8x8x4 with f = 4; 64x64x3 →
16x16x4 or 8x8x4 with f = 4 or 8). The decoder mirrors it with nearest-neighbour
upsampling and `num_res_blocks + 1` blocks per level.

Latents leave the module *flat*, (B, h·w·z_channels), so that everything after stage 1
(latent statistics, Orbax latents, the flat-latent generator and critic, OTT's Sinkhorn)
is the same code for every autoencoder; `latent_shape` says how to fold them back
(`lsdm_jax.models.spatial` does, for the convolutional stage-2 networks).

`dtype` is the compute dtype (bfloat16 on GPU/TPU): parameters stay float32, activations
run in `dtype`, and every output (codes, pixel logits, discriminator scores) is cast back
to float32 so that losses and their reductions are float32. Where bfloat16's 8-bit
mantissa would decide the result, the work is float32 in every dtype: the attention logits
and their softmax, and the discriminator's last convolution (its score).

`PatchDiscriminator` is pix2pix's PatchGAN (as in latent diffusion's
`LPIPSWithDiscriminator`, without the pretrained perceptual net): stride-2 4x4
convolutions to a map of real/fake scores, one per receptive-field patch. Batch
normalisation is replaced by GroupNorm so that a score depends on its image only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lsdm_jax.errors import ConfigError


def check_image_shape(image_shape: Sequence[int], ch_mult: Sequence[int]) -> None:
  """Raises ConfigError unless the image sides divide by the encoder's downsampling."""
  h, w, _ = image_shape
  f = 2 ** (len(ch_mult) - 1)
  if h % f or w % f:
    raise ConfigError(
      f"images of {h}x{w} cannot be downsampled by {f}; use an image size divisible by "
      f"{f} (data.image_size) or a shorter stage1.ch_mult"
    )


def _groups(channels: int) -> int:
  """32 groups as in latent diffusion, or the largest divisor of `channels` below it."""
  return math.gcd(32, channels)


class ResnetBlock(nn.Module):
  """GroupNorm → swish → conv → GroupNorm → swish → conv, plus a (1x1-projected) skip."""

  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    norm = lambda: nn.GroupNorm(_groups(x.shape[-1]), dtype=self.dtype)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(norm()(x)))
    h = nn.GroupNorm(_groups(self.features), dtype=self.dtype)(h)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(h))
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="skip")(x)
    return x + h


def float32_attention(query, key, value, bias=None, mask=None, **kwargs):
  """`nn.dot_product_attention` without dropout, its logits and softmax in float32 whatever
  the inputs' dtype (bfloat16 logits over h·w positions lose the small differences that
  decide the weights); the weighted sum of `value` runs in `value`'s dtype."""
  del kwargs  # Dropout, precision and dtype settings: `AttnBlock` uses none of them.
  weights = nn.dot_product_attention_weights(
    query.astype(jnp.float32), key.astype(jnp.float32), bias, mask, dtype=jnp.float32
  )
  return jnp.einsum("...hqk,...khd->...qhd", weights.astype(value.dtype), value)


class AttnBlock(nn.Module):
  """Single-head self-attention over all positions of a feature map, with a skip."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = nn.GroupNorm(_groups(c), dtype=self.dtype)(x).reshape(b, h * w, c)
    # In float32 Flax's own attention computes the same; below it, float32 logits.
    fn = nn.dot_product_attention if self.dtype == jnp.float32 else float32_attention
    y = nn.MultiHeadDotProductAttention(
      num_heads=1, dtype=self.dtype, deterministic=True, attention_fn=fn
    )(y)
    return x + y.reshape(b, h, w, c)


class ResnetEncoder(nn.Module):
  """y (B, H, W, C) in [0, 1] → (B, h, w, out_channels) at 1/2^(levels − 1) resolution."""

  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  out_channels: int
  attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    h = nn.Conv(self.ch, (3, 3), dtype=self.dtype)((2.0 * y - 1.0).astype(self.dtype))
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = ResnetBlock(self.ch * mult, self.dtype)(h)
      if level < len(self.ch_mult) - 1:
        h = jnp.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0)))  # As latent diffusion: pad, then
        h = nn.Conv(h.shape[-1], (3, 3), (2, 2), "VALID", dtype=self.dtype)(h)  # stride 2.
    h = _middle(h, self.attention, self.dtype)
    h = nn.swish(nn.GroupNorm(_groups(h.shape[-1]), dtype=self.dtype)(h))
    return nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(h).astype(jnp.float32)


class ResnetDecoder(nn.Module):
  """z (B, h, w, z_channels) → pixel logits (B, H, W, C), float32."""

  image_shape: Sequence[int]
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = nn.Conv(self.ch * self.ch_mult[-1], (3, 3), dtype=self.dtype)(z.astype(self.dtype))
    h = _middle(h, self.attention, self.dtype)
    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = ResnetBlock(self.ch * self.ch_mult[level], self.dtype)(h)
      if level > 0:
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
        h = nn.Conv(c, (3, 3), dtype=self.dtype)(h)
    h = nn.swish(nn.GroupNorm(_groups(h.shape[-1]), dtype=self.dtype)(h))
    out = nn.Conv(self.image_shape[-1], (3, 3), dtype=self.dtype)(h)
    return out.astype(jnp.float32)


def _middle(h: jax.Array, attention: bool, dtype) -> jax.Array:
  h = ResnetBlock(h.shape[-1], dtype)(h)
  if attention:
    h = AttnBlock(dtype)(h)
  return ResnetBlock(h.shape[-1], dtype)(h)


class FlatDecoder(nn.Module):
  """The decoder on flat latents (B, h·w·c): folds them to `latent_shape`, then decodes."""

  latent_shape: Sequence[int]
  image_shape: Sequence[int]
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    lead = z.shape[:-1]
    z = z.reshape(-1, *self.latent_shape)
    decoder = ResnetDecoder(
      self.image_shape, self.ch, self.ch_mult, self.num_res_blocks, self.attention, self.dtype
    )
    out = decoder(z)
    return out.reshape(*lead, *out.shape[1:])


def last_layer(params) -> jax.Array:
  """The kernel of the decoder's last convolution (to pixels) in a `ResnetAutoencoder`'s
  parameter tree (or a tree of the same structure, e.g. its gradients): the layer at which
  latent diffusion compares the reconstruction and adversarial gradients."""
  decoder = params["decoder"]["ResnetDecoder_0"]
  convs = [name for name in decoder if name.startswith("Conv_")]
  return decoder[max(convs, key=lambda name: int(name.split("_")[1]))]["kernel"]


class PatchDiscriminator(nn.Module):
  """PatchGAN: images (B, H, W, C) in [0, 1] → (B, h', w') float32 scores."""

  features: int = 64
  num_layers: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    h = (2.0 * y - 1.0).astype(self.dtype)
    h = nn.leaky_relu(nn.Conv(self.features, (4, 4), (2, 2), dtype=self.dtype)(h), 0.2)
    for n in range(1, self.num_layers + 1):
      f = self.features * min(2**n, 8)
      stride = 2 if n < self.num_layers else 1
      h = nn.Conv(f, (4, 4), (stride, stride), use_bias=False, dtype=self.dtype)(h)
      h = nn.leaky_relu(nn.GroupNorm(_groups(f), dtype=self.dtype)(h), 0.2)
    return nn.Conv(1, (4, 4), dtype=jnp.float32)(h.astype(jnp.float32))[..., 0]


class ResnetAutoencoder(nn.Module):
  """E and D with a spatial latent; the `Autoencoder` interface on flat codes.

  Attributes:
    image_shape: (H, W, C).
    ch: base channel count.
    ch_mult: channel multiplier per resolution level (len − 1 halvings).
    num_res_blocks: residual blocks per level (decoder: one more).
    z_channels: channels of the spatial latent.
    attention: self-attention in the middle (lowest resolution).
    variational: the encoder also returns a log-variance (the KL regulariser).
    dtype: compute dtype (parameters and outputs stay float32).
    discriminator: also holds a `PatchDiscriminator` (params['discriminator']).
    disc_features, disc_layers: the discriminator's width and depth.
  """

  image_shape: Sequence[int]
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 4)
  num_res_blocks: int = 2
  z_channels: int = 4
  attention: bool = True
  variational: bool = True
  dtype: jnp.dtype = jnp.float32
  discriminator: bool = False
  disc_features: int = 64
  disc_layers: int = 3

  @property
  def factor(self) -> int:
    return 2 ** (len(self.ch_mult) - 1)

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    h, w, _ = self.image_shape
    return (h // self.factor, w // self.factor, self.z_channels)

  @property
  def latent_dim(self) -> int:
    return math.prod(self.latent_shape)

  def _decoder(self, **kwargs) -> nn.Module:
    return FlatDecoder(
      self.latent_shape,
      tuple(self.image_shape),
      self.ch,
      tuple(self.ch_mult),
      self.num_res_blocks,
      self.attention,
      self.dtype,
      **kwargs,
    )

  def make_decoder(self) -> nn.Module:
    """The decoder module alone, top-level: apply it to `params['decoder']`."""
    return self._decoder(parent=None)

  def setup(self):
    check_image_shape(self.image_shape, self.ch_mult)
    out = 2 * self.z_channels if self.variational else self.z_channels
    self.encoder = ResnetEncoder(
      self.ch, tuple(self.ch_mult), self.num_res_blocks, out, self.attention, self.dtype
    )
    self.decoder = self._decoder()
    if self.discriminator:
      self.disc = PatchDiscriminator(self.disc_features, self.disc_layers, self.dtype)

  def encode(self, y):
    """y (B, H, W, C) → flat code (B, latent_dim) [, flat log-variance]."""
    h = self.encoder(y)
    flat = lambda a: a.reshape(a.shape[0], -1)
    if self.variational:
      mu, logvar = jnp.split(h, 2, axis=-1)
      return flat(mu), flat(logvar)
    return flat(h)

  def decode(self, z):
    """Flat z (B, latent_dim) → images (B, H, W, C) in [0, 1]."""
    return nn.sigmoid(self.decoder(z))

  def decode_logits(self, z):
    return self.decoder(z)

  def discriminate(self, y):
    """PatchGAN scores (B, h', w') of images y in [0, 1]."""
    return self.disc(y)

  def __call__(self, y):
    """Initialisation path: y → (pixel logits, encoder output[, patch scores])."""
    out = self.encode(y)
    z = out[0] if self.variational else out
    logits = self.decoder(z)
    if self.discriminator:
      return logits, out, self.disc(y)
    return logits, out
