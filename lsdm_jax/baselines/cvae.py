"""Baseline: a conditional VAE trained on the paired examples alone (supervised only).

Its gap to LSDM is what the unpaired images bring. Encoder q(z | y, x) and decoder
p(y | z, x) are MLPs with a learned label embedding; per-pixel Bernoulli likelihood (grey
levels as soft targets); loss: BCE summed over pixels + β · KL(q ‖ N(0, I)), averaged over
the batch. Generation returns the Bernoulli means of decode(z ~ N(0, I), x). Conditions are
int32 labels. Settings: the `cvae` section of `base_config()`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from lsdm_jax import loop
from lsdm_jax.baselines import paired_data
from lsdm_jax.models.generator import noise_per_row

Params = dict


class CVAE(nn.Module):
  """Encoder q(z | y, x) (`encode`) and decoder p(y | z, x) (`decode_logits`)."""

  image_shape: Sequence[int]
  num_classes: int
  latent_dim: int = 16
  embed_features: int = 32
  encoder_widths: Sequence[int] = (1024, 512)
  decoder_widths: Sequence[int] = (512, 1024)

  def setup(self):
    self.embed = nn.Embed(self.num_classes, self.embed_features)
    self.encoder_layers = [nn.Dense(w) for w in self.encoder_widths]
    self.mean_layer = nn.Dense(self.latent_dim)
    self.logvar_layer = nn.Dense(self.latent_dim)
    self.decoder_layers = [nn.Dense(w) for w in self.decoder_widths]
    self.pixel_layer = nn.Dense(math.prod(self.image_shape))

  def encode(self, y: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """y (B, H, W, C) in [0, 1], x (B,) → q's mean and log-variance, (B, latent_dim) each."""
    h = jnp.concatenate([2.0 * y.reshape(y.shape[0], -1) - 1.0, self.embed(x)], axis=-1)
    for layer in self.encoder_layers:
      h = nn.gelu(layer(h))
    return self.mean_layer(h), self.logvar_layer(h)

  def decode_logits(self, z: jax.Array, x: jax.Array) -> jax.Array:
    """z (B, latent_dim), x (B,) → pixel logits (B, H, W, C)."""
    h = jnp.concatenate([z, self.embed(x)], axis=-1)
    for layer in self.decoder_layers:
      h = nn.gelu(layer(h))
    return self.pixel_layer(h).reshape(z.shape[0], *self.image_shape)

  def __call__(self, y: jax.Array, x: jax.Array, key: jax.Array):
    """Reparametrised pass: (pixel logits, mean, logvar)."""
    mean, logvar = self.encode(y, x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    return self.decode_logits(z, x), mean, logvar


def make_model(
  image_shape: Sequence[int], num_classes: int, config: ml_collections.ConfigDict
) -> CVAE:
  """The `CVAE` of `config` (a `cvae` section)."""
  widths = (tuple(config.encoder_widths), tuple(config.decoder_widths))
  return CVAE(tuple(image_shape), num_classes, config.latent_dim, config.embed_features, *widths)


@functools.partial(jax.jit, static_argnames=("model", "config"))
def init_state(model: CVAE, config, y_example: jax.Array, key: jax.Array) -> loop.TrainState:
  """The initial state; y_example: one image (1, H, W, C) (only its shape is used)."""
  k_init, k_noise = jax.random.split(key)
  params = model.init(k_init, jnp.zeros_like(y_example), jnp.zeros((1,), jnp.int32), k_noise)
  params = params["params"]
  return loop.TrainState.create(params, loop.make_optimizer(config).init(params))


def loss_fn(
  params: Params, model: CVAE, x: jax.Array, y: jax.Array, key: jax.Array, beta: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative ELBO (nats per image) of labels x (B,) and images y (B, H, W, C):
  (loss, {'reconstruction', 'kl'}); `key` draws the reparametrisation noise."""
  logits, mean, logvar = model.apply({"params": params}, y, x, key)
  recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y), axis=(1, 2, 3))
  kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
  recon, kl = jnp.mean(recon), jnp.mean(kl)
  return recon + beta * kl, {"reconstruction": recon, "kl": kl}


@functools.partial(
  jax.jit, static_argnames=("model", "config", "num_steps", "sharding"), donate_argnums=0
)
def train_call(state, data, key, *, model: CVAE, config, num_steps: int, sharding=None):
  """`num_steps` steps in one `lax.scan`, step k's batch and noise from fold_in(key, k);
  the means of 'loss', 'reconstruction', 'kl'."""
  x_all, y_all = data
  tx = loop.make_optimizer(config)

  def body(s: loop.TrainState, _):
    k_batch, k_noise = jax.random.split(jax.random.fold_in(key, s.step))
    batch = paired_data.sample_batch(k_batch, x_all, y_all, (config.batch_size,))
    batch = paired_data.constrain(batch, sharding)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      s.params, model, *batch, k_noise, config.beta
    )
    params, opt_state = loop.apply_gradients(tx, grads, s.opt_state, s.params)
    s = loop.guarded_update(s, loop.all_finite(loss, grads), params, opt_state)
    return s, {"loss": loss, **metrics}

  state, metrics = jax.lax.scan(body, state, None, length=num_steps)
  return state, jax.tree.map(jnp.mean, metrics)


def _generate(model: CVAE, params: Params, x: jax.Array, key: jax.Array) -> jax.Array:
  z = noise_per_row(key, x.shape[0], model.latent_dim)
  return jax.nn.sigmoid(model.apply({"params": params}, z, x, method=CVAE.decode_logits))


class ConditionalVAE(paired_data.LabelGenerator):
  """A trained conditional VAE (`module`: the `CVAE`, `params`: its weights)."""

  @classmethod
  def fit(
    cls,
    x: jax.Array | np.ndarray,
    y: jax.Array | np.ndarray,
    *,
    num_classes: int,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[ConditionalVAE, dict[str, np.ndarray]]:
    """Trains the CVAE on labels x (N,) and images y (N, H, W, C) (see
    `paired_data.check_paired`); `config`: the `cvae` section (None: defaults); seed, mesh:
    see `paired_data.train_pairs`. Returns (the model, the training history)."""
    config = paired_data.settings("cvae", config)
    x, y = paired_data.check_paired(x, y, num_classes)
    model = make_model(y.shape[1:], num_classes, config)
    step_config = paired_data.without_length(config)
    init = lambda k: init_state(model, step_config, jnp.asarray(y[:1]), k)  # noqa: E731
    kw = {"seed": seed, "mesh": mesh, "model": model, "config": step_config}
    state, history = paired_data.train_pairs("cvae", config, x, y, init, train_call, **kw)
    return cls(model, state.params, _generate), history
