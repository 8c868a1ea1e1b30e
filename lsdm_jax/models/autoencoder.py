"""Stage-1 encoder E: y → z and decoder D: z → y.

Two decoders, chosen by `Autoencoder.decoder_kind` (config `stage1.decoder`):

* `mlp` (default): dense layers straight to the pixels. Generation is y = D(G(η, x)),
  so D sets the speed of `generate`; large matrix products are what XLA compiles best
  on every backend, and on XLA:CPU this decoder runs at 50–70% of a large matmul's
  FLOP/s, against about 18% for the conv decoder below (`benchmarks/throughput.py`).
* `conv`: a dense stem at 1/2^k resolution, then sub-pixel convolutions (a convolution
  to 4x the channels, then depth-to-space) instead of transposed convolutions: same
  receptive field, no checkerboard artefacts, and on XLA:CPU about twice as fast in
  training, because the backward pass of a transposed convolution compiles poorly there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax

from lsdm_jax.errors import ConfigError

DECODERS = ("mlp", "conv")


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """(B, H, W, C·b²) → (B, H·b, W·b, C)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, block, block, c // (block * block))
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c // (block * block))


def check_image_shape(image_shape: Sequence[int], num_down: int) -> None:
  h, w, _ = image_shape
  k = 2**num_down
  if h % k or w % k:
    raise ConfigError(
      f"images of {h}x{w} cannot be downsampled {num_down} times by 2; use an image size "
      f"divisible by {k} or set fewer stage1.features"
    )


class Encoder(nn.Module):
  """Conv encoder: each entry of `features` is a stride-2 conv stage, then a dense head.

  Attributes:
    latent_dim: size of z.
    features: channels of the stride-2 stages (len = number of halvings).
    hidden: width of the dense layer before z.
    variational: if True, also returns a log-variance (for the KL regulariser).
  """

  latent_dim: int
  features: Sequence[int] = (16, 32)
  hidden: int = 256
  variational: bool = False

  @nn.compact
  def __call__(self, y: jax.Array):
    """Args: y (B, H, W, C) in [0, 1]. Returns z (B, latent_dim) [, logvar]."""
    h = 2.0 * y - 1.0
    for f in self.features:
      h = nn.gelu(nn.Conv(f, (3, 3), strides=(2, 2))(h))
    h = h.reshape(h.shape[0], -1)
    h = nn.gelu(nn.Dense(self.hidden)(h))
    z = nn.Dense(self.latent_dim, name="z")(h)
    if self.variational:
      return z, nn.Dense(self.latent_dim, name="logvar")(h)
    return z


class Decoder(nn.Module):
  """Dense stem at 1/2^k resolution, then k sub-pixel ×2 upsampling stages.

  The last stage convolves at half resolution straight to 4·C channels and rearranges
  them into the full-resolution image: no convolution ever runs at full resolution,
  whose backward pass (few output channels, many pixels) is XLA:CPU's slowest case.

  Attributes:
    image_shape: (H, W, C) of the output.
    features: channels per stage, coarsest first (mirrors the encoder's, reversed).
    hidden: width of the dense layer after z.
  """

  image_shape: Sequence[int]
  features: Sequence[int] = (32, 16)
  hidden: int = 256

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Args: z (B, latent_dim). Returns pixel logits (B, H, W, C)."""
    h_out, w_out, c_out = self.image_shape
    k = len(self.features)
    h0, w0 = h_out // 2**k, w_out // 2**k
    h = nn.gelu(nn.Dense(self.hidden)(z))
    h = nn.gelu(nn.Dense(h0 * w0 * self.features[0])(h))
    h = h.reshape(z.shape[0], h0, w0, self.features[0])
    for f in self.features[1:]:
      h = nn.gelu(depth_to_space(nn.Conv(4 * f, (3, 3))(h), 2))
    # Logits; `Autoencoder.decode` applies the sigmoid.
    return depth_to_space(nn.Conv(4 * c_out, (3, 3))(h), 2)


class MLPDecoder(nn.Module):
  """Dense layers from z to every pixel's logit.

  Attributes:
    image_shape: (H, W, C) of the output.
    widths: hidden widths, first to last.
  """

  image_shape: Sequence[int]
  widths: Sequence[int] = (512, 1024)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Args: z (B, latent_dim). Returns pixel logits (B, H, W, C)."""
    h = z
    for width in self.widths:
      h = nn.gelu(nn.Dense(width)(h))
    # Logits; `Autoencoder.decode` applies the sigmoid.
    return nn.Dense(math.prod(self.image_shape))(h).reshape(z.shape[0], *self.image_shape)


class Autoencoder(nn.Module):
  """E and D together, for stage-1 training; use `encode`/`decode` as methods.

  Attributes:
    image_shape: (H, W, C).
    latent_dim: size of z.
    features: channels of the encoder's stride-2 stages (and, reversed, of the conv
      decoder's upsampling stages).
    hidden: width of the dense layer next to z (encoder; conv decoder).
    variational: the encoder also returns a log-variance.
    decoder_kind: 'mlp' or 'conv' (see the module docstring).
    decoder_widths: hidden widths of the 'mlp' decoder.
  """

  image_shape: Sequence[int]
  latent_dim: int
  features: Sequence[int] = (16, 32)
  hidden: int = 256
  variational: bool = False
  decoder_kind: str = "mlp"
  decoder_widths: Sequence[int] = (512, 1024)

  def _decoder(self, **kwargs) -> nn.Module:
    if self.decoder_kind == "mlp":
      return MLPDecoder(tuple(self.image_shape), tuple(self.decoder_widths), **kwargs)
    if self.decoder_kind == "conv":
      return Decoder(tuple(self.image_shape), tuple(reversed(self.features)), self.hidden, **kwargs)
    raise ConfigError(f"stage1.decoder={self.decoder_kind!r} is not one of {DECODERS}")

  def make_decoder(self) -> nn.Module:
    """The decoder module alone, top-level: apply it to `params['decoder']`."""
    return self._decoder(parent=None)

  def setup(self):
    check_image_shape(self.image_shape, len(self.features))
    self.encoder = Encoder(self.latent_dim, self.features, self.hidden, self.variational)
    self.decoder = self._decoder()

  def encode(self, y):
    return self.encoder(y)

  def decode(self, z):
    """z (B, latent_dim) → images (B, H, W, C) in [0, 1]."""
    return nn.sigmoid(self.decoder(z))

  def decode_logits(self, z):
    return self.decoder(z)

  def __call__(self, y):
    """Initialisation path: y → (pixel logits, encoder output)."""
    out = self.encoder(y)
    z = out[0] if self.variational else out
    return self.decoder(z), out


def encode_mean(model: Autoencoder, params, y: jax.Array) -> jax.Array:
  """E(y): the deterministic code (the mean, for a variational encoder)."""
  out = model.apply({"params": params}, y, method="encode")
  return out[0] if model.variational else out


def decode(model: Autoencoder, params, z: jax.Array) -> jax.Array:
  return model.apply({"params": params}, z, method="decode")
