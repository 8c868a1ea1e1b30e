"""Baseline: a conditional VAE trained on the paired examples alone (supervised only).

The supervised-only reference point of the semi-supervised comparison: the same paired
(x, y) that LSDM's stage 2 sees, no unpaired images at all. Its gap to LSDM is what the
unpaired data bring through the autoencoder.

* encoder q(z | y, x): an MLP on concat(2y − 1 flattened, e(x)) to the mean and
  log-variance of a diagonal Gaussian (e: a learned label embedding);
* decoder p(y | z, x): an MLP on concat(z, e(x)) to every pixel's logit, a Bernoulli
  likelihood per pixel (grey levels in [0, 1] as soft targets, the usual MNIST choice);
* loss: the negative ELBO, BCE summed over pixels + β · KL(q(z | y, x) ‖ N(0, I)), per
  example, averaged over the batch;
* generation: decode(z ~ N(0, I), x) in one jitted call, returning the Bernoulli means
  sigmoid(logits) (the grey-level image, not a binary sample).

Conditions are class labels (the class-conditional task): x is an int32 label.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding

from lsdm_jax.baselines.paired_data import (
  check_paired,
  place,
  requested_labels,
  sample_batch,
  step_config,
  train_in_calls,
)
from lsdm_jax.errors import ConfigError
from lsdm_jax.sampling import noise_per_row

Params = Any


@dataclasses.dataclass(frozen=True)
class CVAEConfig:
  """Hyperparameters of the conditional VAE baseline (`CVAEConfig(**d)`)."""

  steps: int = 3000  # optimiser steps
  batch_size: int = 256  # examples per step, drawn with replacement from the paired set
  lr: float = 1e-3  # Adam learning rate (constant)
  grad_clip: float = 10.0  # global gradient-norm clip
  latent_dim: int = 16  # size of z
  beta: float = 1.0  # weight of the KL term (1 = the ELBO)
  embed_features: int = 32  # width of the label embedding (shared by encoder and decoder)
  encoder_widths: tuple[int, ...] = (1024, 512)  # encoder MLP widths
  decoder_widths: tuple[int, ...] = (512, 1024)  # decoder MLP widths
  steps_per_call: int = 100  # optimiser steps fused with lax.scan into one jitted call

  def __post_init__(self):
    for name in ("steps", "batch_size", "latent_dim", "embed_features", "steps_per_call"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)}; use a positive integer")
    for name in ("encoder_widths", "decoder_widths"):
      widths = getattr(self, name)
      if not widths or any(w < 1 for w in widths):
        raise ConfigError(f"{name}={widths!r}; use one or more positive widths")
    for name in ("lr", "grad_clip"):
      if not getattr(self, name) > 0:
        raise ConfigError(f"{name}={getattr(self, name)}; use a positive number")
    if self.beta < 0:
      raise ConfigError(f"beta={self.beta}; use a value >= 0")


# --------------------------------------------------------------------------- model


class CVAE(nn.Module):
  """Encoder q(z | y, x) and decoder p(y | z, x); use `encode` / `decode_logits` as methods.

  Attributes:
    image_shape: (H, W, C).
    num_classes: label table size.
    latent_dim: size of z.
    embed_features: width of the label embedding.
    encoder_widths, decoder_widths: MLP widths.
  """

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
    """y (B, H, W, C) in [0, 1], x (B,) → mean and log-variance of q, each (B, latent_dim)."""
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


def make_model(image_shape: Sequence[int], num_classes: int, config: CVAEConfig) -> CVAE:
  """The `CVAE` that `train` builds."""
  return CVAE(
    tuple(image_shape),
    num_classes,
    config.latent_dim,
    config.embed_features,
    tuple(config.encoder_widths),
    tuple(config.decoder_widths),
  )


# --------------------------------------------------------------------------- training


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Params
  opt_state: optax.OptState


def make_optimizer(config: CVAEConfig) -> optax.GradientTransformation:
  """Adam at a constant rate, with global-norm clipping.

  Constant, so that the step does not depend on the run's length (`steps`): runs that
  differ only in length share one compilation.
  """
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))


@functools.partial(jax.jit, static_argnames=("model", "config"))
def create_train_state(
  model: CVAE, config: CVAEConfig, y_example: jax.Array, key: jax.Array
) -> TrainState:
  """Initial state; y_example: one image (1, H, W, C) (only its shape is used)."""
  k_init, k_noise = jax.random.split(key)
  params = model.init(k_init, jnp.zeros_like(y_example), jnp.zeros((1,), jnp.int32), k_noise)
  params = params["params"]
  return TrainState(jnp.zeros((), jnp.int32), params, make_optimizer(config).init(params))


def loss_fn(
  params: Params, model: CVAE, x: jax.Array, y: jax.Array, key: jax.Array, beta: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative ELBO per example, averaged: BCE summed over pixels + β · KL.

  Args:
    params: model parameters.
    model: the CVAE.
    x: (B,) int32 labels.
    y: (B, H, W, C) images in [0, 1].
    key: reparametrisation noise.
    beta: KL weight.

  Returns:
    (loss, {'reconstruction', 'kl'}), all scalars (nats per image).
  """
  logits, mean, logvar = model.apply({"params": params}, y, x, key)
  recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y), axis=(1, 2, 3))
  kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
  recon, kl = jnp.mean(recon), jnp.mean(kl)
  return recon + beta * kl, {"reconstruction": recon, "kl": kl}


def train_steps(
  state: TrainState,
  data: tuple[jax.Array, jax.Array],
  key: jax.Array,
  *,
  model: CVAE,
  config: CVAEConfig,
  num_steps: int,
  data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """`num_steps` optimiser steps in one `lax.scan`, step k's batch and noise from
  fold_in(key, k); metrics ('loss', 'reconstruction', 'kl') stacked, each (num_steps,)."""
  x_all, y_all = data
  tx = make_optimizer(config)

  def body(s: TrainState, _):
    k_batch, k_noise = jax.random.split(jax.random.fold_in(key, s.step))
    batch = sample_batch(k_batch, x_all, y_all, (config.batch_size,))
    if data_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, data_sharding)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      s.params, model, *batch, k_noise, config.beta
    )
    updates, opt_state = tx.update(grads, s.opt_state, s.params)
    new = TrainState(s.step + 1, optax.apply_updates(s.params, updates), opt_state)
    return new, {"loss": loss, **metrics}

  return jax.lax.scan(body, state, None, length=num_steps)


# Module level, so that runs with the same model, config and data shapes share a compilation.
_train_steps_jit = jax.jit(
  train_steps, static_argnames=("model", "config", "num_steps", "data_sharding"), donate_argnums=0
)


def train(
  x: jax.Array | np.ndarray,
  y: jax.Array | np.ndarray,
  *,
  num_classes: int,
  config: CVAEConfig = CVAEConfig(),
  seed: int = 0,
  mesh: Mesh | None = None,
) -> tuple[Params, dict[str, np.ndarray]]:
  """Trains the conditional VAE on the paired examples (x, y) alone.

  Args:
    x: (N,) int labels in [0, num_classes).
    y: (N, H, W, C) images, uint8 or float32 in [0, 1].
    num_classes: number of labels.
    config: hyperparameters.
    seed: all randomness (initialisation, batches, noise) derives from it.
    mesh: if given (`lsdm_jax.parallel.make_mesh`), batches are sharded over its 'data'
      axis and the state and data set are replicated.

  Returns:
    (parameters for `make_model(...)`, history) where history holds per jitted call
    `step` (steps done), `loss`, `reconstruction` and `kl` (means over the call's steps,
    nats per image) and `time` (seconds since the start).

  Raises:
    DataError: for malformed data; NonFiniteError: if training diverges.
  """
  x, y = check_paired(x, y, num_classes)
  model = make_model(y.shape[1:], num_classes, config)
  init_key, run_key = jax.random.split(jax.random.key(seed))
  state = create_train_state(model, config, jnp.asarray(y[:1]), init_key)
  state, data, data_sharding = place(state, x, y, config.batch_size, mesh)
  kwargs = {"model": model, "config": step_config(config), "data_sharding": data_sharding}
  state, history = train_in_calls(
    lambda s, n: _train_steps_jit(s, data, run_key, num_steps=n, **kwargs),
    state,
    steps=config.steps,
    steps_per_call=config.steps_per_call,
    names=("loss", "reconstruction", "kl"),
    what="CVAE",
    fix="lower config.lr",
  )
  return state.params, history


# --------------------------------------------------------------------------- generation


def _generate(model: CVAE, params: Params, x: jax.Array, key: jax.Array) -> jax.Array:
  z = noise_per_row(key, x.shape[0], model.latent_dim)
  logits = model.apply({"params": params}, z, x, method=CVAE.decode_logits)
  return jax.nn.sigmoid(logits)


def make_generate_fn(model: CVAE) -> Callable:
  """The jitted `generate(params, x, key) -> images (B, H, W, C) in [0, 1]`.

  decode(z, x) with z ~ N(0, I), one forward pass of the decoder; x is (B,) int32
  labels; row i's z comes from fold_in(key, i), so an image depends on its key and row,
  not on how many are generated together.
  """
  return jax.jit(functools.partial(_generate, model))


@dataclasses.dataclass(frozen=True)
class ConditionalVAE:
  """A trained conditional VAE: definition and parameters.

  Attributes:
    model: the CVAE module.
    params: its parameters.
  """

  model: CVAE
  params: Params

  @classmethod
  def fit(
    cls,
    x: jax.Array | np.ndarray,
    y: jax.Array | np.ndarray,
    *,
    num_classes: int,
    config: CVAEConfig = CVAEConfig(),
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[ConditionalVAE, dict[str, np.ndarray]]:
    """`train`, returning the model with its history (see `train` for the arguments)."""
    params, history = train(x, y, num_classes=num_classes, config=config, seed=seed, mesh=mesh)
    return cls(make_model(np.shape(y)[1:], num_classes, config), params), history

  @functools.cached_property
  def generate_fn(self) -> Callable:
    """The raw jitted `generate(params, x, key)` (see `make_generate_fn`)."""
    return make_generate_fn(self.model)

  def generate(self, x, key: jax.Array, n: int | None = None) -> np.ndarray:
    """Images for labels x ((B,) or a scalar), each repeated `n` times (consecutive rows).

    Returns:
      (B·n, H, W, C) float32 in [0, 1], on the host.
    """
    x = requested_labels(x, self.model.num_classes, n)
    return np.asarray(self.generate_fn(self.params, jnp.asarray(x), key))
