"""Baseline: a conditional Wasserstein generator in pixel space, with no autoencoder.

In the spirit of the Wasserstein generative conditional sampler of Liu et al. (2021): a
generator G(η, x) → y, one forward pass from noise and condition to all pixels, trained
so that the joint law of (x, G(η, x)) matches that of the paired (x, y) in W1, estimated
by a critic f(x, y) (Kantorovich–Rubinstein dual with a gradient penalty, WGAN-GP).

It is LSDM without stage 1: same estimator, same one-step generation, but the generator
works on 784 pixels rather than a 16-d latent space, and it sees the paired examples
only; the unpaired images have nowhere to go. Comparing the two measures what the
autoencoder (trained on paired and unpaired images) contributes.

* G: an MLP on concat(η, e(x)) (e: a learned label embedding) whose last layer gives
  every pixel's logit, then a sigmoid: the shape of `lsdm_jax.models.autoencoder`'s MLP
  decoder, preceded by the conditioning MLP.
* f: an MLP on concat(2y − 1 flattened, e'(x)) to one scalar; no normalisation layers,
  since the gradient penalty is taken per example.
* Each generator update follows `n_critic` critic updates, fused with `lax.scan` (the
  generator is fixed during them, so all their fake images come from one larger call).

Conditions are class labels only (the class-conditional task): x is an int32 label.
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

from lsdm_jax import parallel, wasserstein
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
class PixelWGCSConfig:
  """Hyperparameters of the pixel-space Wasserstein generator (`PixelWGCSConfig(**d)`)."""

  steps: int = 5000  # generator updates (each after n_critic critic updates)
  batch_size: int = 256  # examples per update, drawn with replacement from the paired set
  lr: float = 1e-4  # generator Adam learning rate
  critic_lr: float = 1e-4  # critic Adam learning rate
  b1: float = 0.5  # Adam β1 (both; the usual WGAN-GP setting)
  b2: float = 0.9  # Adam β2 (both)
  grad_clip: float = 10.0  # global gradient-norm clip (both)
  n_critic: int = 5  # critic updates per generator update
  gp_weight: float = 10.0  # weight of the gradient penalty
  noise_dim: int = 32  # size of η
  embed_features: int = 32  # width of the label embeddings (generator and critic)
  widths: tuple[int, ...] = (256, 512, 1024)  # generator MLP widths, before the pixel layer
  critic_widths: tuple[int, ...] = (512, 256)  # critic MLP widths
  steps_per_call: int = 50  # generator updates fused with lax.scan into one jitted call

  def __post_init__(self):
    for name in ("steps", "batch_size", "n_critic", "noise_dim", "embed_features"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)}; use a positive integer")
    if self.steps_per_call < 1:
      raise ConfigError(f"steps_per_call={self.steps_per_call}; use a positive integer")
    for name in ("widths", "critic_widths"):
      widths = getattr(self, name)
      if not widths or any(w < 1 for w in widths):
        raise ConfigError(f"{name}={widths!r}; use one or more positive widths")
    for name in ("lr", "critic_lr", "grad_clip"):
      if not getattr(self, name) > 0:
        raise ConfigError(f"{name}={getattr(self, name)}; use a positive number")
    if self.gp_weight < 0:
      raise ConfigError(f"gp_weight={self.gp_weight}; use a value >= 0")
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(f"{name}={getattr(self, name)}; use a value in [0, 1)")


# --------------------------------------------------------------------------- models


class PixelGenerator(nn.Module):
  """G(η, x) → image in [0, 1].

  Attributes:
    image_shape: (H, W, C) of the output.
    num_classes: label table size.
    noise_dim: size of η.
    embed_features: width of the label embedding.
    widths: hidden widths of the MLP.
  """

  image_shape: Sequence[int]
  num_classes: int
  noise_dim: int = 32
  embed_features: int = 32
  widths: Sequence[int] = (256, 512, 1024)

  @nn.compact
  def __call__(self, eta: jax.Array, x: jax.Array) -> jax.Array:
    """Args: eta (B, noise_dim); x (B,) int32 labels. Returns (B, H, W, C) in [0, 1]."""
    h = jnp.concatenate([eta, nn.Embed(self.num_classes, self.embed_features)(x)], axis=-1)
    for width in self.widths:
      h = nn.gelu(nn.Dense(width)(h))
    logits = nn.Dense(math.prod(self.image_shape))(h)
    return nn.sigmoid(logits).reshape(eta.shape[0], *self.image_shape)


class PixelCritic(nn.Module):
  """f(x, y) → R: an MLP on concat(2y − 1 flattened, e(x)).

  The first layer is split into the label's share (`condition`, computed once per batch)
  and the image's, so the loss can evaluate f(x, ·) on real, fake and interpolated images
  of one batch with a single embedding of x.

  Attributes:
    num_classes: label table size.
    embed_features: width of the label embedding.
    widths: hidden widths.
  """

  num_classes: int
  embed_features: int = 32
  widths: Sequence[int] = (512, 256)

  def setup(self):
    self.embed = nn.Embed(self.num_classes, self.embed_features)
    self.cond_dense = nn.Dense(self.widths[0], use_bias=False)
    self.image_dense = nn.Dense(self.widths[0])
    self.layers = [nn.Dense(w) for w in self.widths[1:]]
    self.out = nn.Dense(1)

  def condition(self, x: jax.Array) -> jax.Array:
    """x (B,) → the label's share of the first layer, (B, widths[0])."""
    return self.cond_dense(self.embed(x))

  def head(self, cond: jax.Array, y_flat: jax.Array) -> jax.Array:
    """f for flattened images y_flat (B, H·W·C) in [0, 1] given `condition(x)`. Returns (B,)."""
    h = nn.gelu(cond + self.image_dense(2.0 * y_flat - 1.0))
    for layer in self.layers:
      h = nn.gelu(layer(h))
    return self.out(h)[..., 0]

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """Args: x (B,) labels; y (B, H, W, C) images. Returns (B,)."""
    return self.head(self.condition(x), y.reshape(y.shape[0], -1))


def make_models(
  image_shape: Sequence[int], num_classes: int, config: PixelWGCSConfig
) -> tuple[PixelGenerator, PixelCritic]:
  """The generator and critic that `train` builds."""
  generator = PixelGenerator(
    tuple(image_shape),
    num_classes,
    config.noise_dim,
    config.embed_features,
    tuple(config.widths),
  )
  critic = PixelCritic(num_classes, config.embed_features, tuple(config.critic_widths))
  return generator, critic


# --------------------------------------------------------------------------- training


@struct.dataclass
class TrainState:
  """Step, parameters and optimiser states of both networks."""

  step: jax.Array
  gen_params: Params
  critic_params: Params
  gen_opt: optax.OptState
  critic_opt: optax.OptState


def _adam(lr: float, config: PixelWGCSConfig) -> optax.GradientTransformation:
  return optax.chain(
    optax.clip_by_global_norm(config.grad_clip), optax.adam(lr, b1=config.b1, b2=config.b2)
  )


@functools.partial(jax.jit, static_argnames=("generator", "critic", "config"))
def create_train_state(
  generator: PixelGenerator,
  critic: PixelCritic,
  config: PixelWGCSConfig,
  y_example: jax.Array,
  key: jax.Array,
) -> TrainState:
  """Initial state; y_example: one image (1, H, W, C) (only its shape is used)."""
  k_gen, k_critic = jax.random.split(key)
  x = jnp.zeros((1,), jnp.int32)
  gen_params = generator.init(k_gen, jnp.zeros((1, config.noise_dim)), x)["params"]
  critic_params = critic.init(k_critic, x, jnp.zeros_like(y_example))["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    gen_params=gen_params,
    critic_params=critic_params,
    gen_opt=_adam(config.lr, config).init(gen_params),
    critic_opt=_adam(config.critic_lr, config).init(critic_params),
  )


def _critic_fn(critic: PixelCritic, params: Params, x: jax.Array) -> Callable:
  """y_flat ↦ f(x, y_flat), with the label's share computed once."""
  cond = critic.apply({"params": params}, x, method=PixelCritic.condition)
  return lambda y_flat: critic.apply({"params": params}, cond, y_flat, method=PixelCritic.head)


def train_step(
  state: TrainState,
  data: tuple[jax.Array, jax.Array],
  key: jax.Array,
  *,
  generator: PixelGenerator,
  critic: PixelCritic,
  config: PixelWGCSConfig,
  data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """`n_critic` critic updates then one generator update; randomness from fold_in(key, step).

  Args:
    state: train state.
    data: (x (N,) int32, y (N, H, W, C) float32), the whole paired set.
    key: the run's key.
    generator, critic, config: models and hyperparameters.
    data_sharding: if set, batches are sharded this way (their batch axis over `data`).

  Returns:
    The new state and metrics: w1_critic (the critic's dual estimate E f(real) − E f(fake)
    at its last update), gradient_penalty, gen_loss.
  """
  x_all, y_all = data
  b, nc = config.batch_size, config.n_critic
  k_batch, k_eta, k_steps, k_gbatch, k_geta = jax.random.split(
    jax.random.fold_in(key, state.step), 5
  )

  def constrain(tree, lead: int):
    if data_sharding is None:
      return tree
    spec = jax.sharding.PartitionSpec(*([None] * lead), parallel.DATA)
    return jax.lax.with_sharding_constraint(tree, NamedSharding(data_sharding.mesh, spec))

  # The generator is fixed while the critic trains: all fake images in one call.
  x, y = constrain(sample_batch(k_batch, x_all, y_all, (nc, b)), 1)
  eta = jax.random.normal(k_eta, (nc * b, config.noise_dim))
  fake = generator.apply({"params": state.gen_params}, eta, x.reshape(-1))
  batches = jax.lax.stop_gradient((x, y.reshape(nc, b, -1), fake.reshape(nc, b, -1)))
  critic_tx = _adam(config.critic_lr, config)

  def critic_update(carry, inputs):
    params, opt = carry
    (xb, real, fake_b), k = inputs

    def loss_fn(p):
      return wasserstein.critic_loss(_critic_fn(critic, p, xb), real, fake_b, k, config.gp_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = critic_tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), metrics

  (critic_params, critic_opt), metrics = jax.lax.scan(
    critic_update,
    (state.critic_params, state.critic_opt),
    (batches, jax.random.split(k_steps, nc)),
  )
  metrics = jax.tree.map(lambda v: v[-1], metrics)

  xg, _ = constrain(sample_batch(k_gbatch, x_all, y_all, (b,)), 0)
  eta = jax.random.normal(k_geta, (b, config.noise_dim))
  f = _critic_fn(critic, critic_params, xg)

  def gen_loss_fn(gp):
    images = generator.apply({"params": gp}, eta, xg)
    return -jnp.mean(f(images.reshape(b, -1)))

  gen_loss, grads = jax.value_and_grad(gen_loss_fn)(state.gen_params)
  gen_tx = _adam(config.lr, config)
  updates, gen_opt = gen_tx.update(grads, state.gen_opt, state.gen_params)
  new_state = TrainState(
    step=state.step + 1,
    gen_params=optax.apply_updates(state.gen_params, updates),
    critic_params=critic_params,
    gen_opt=gen_opt,
    critic_opt=critic_opt,
  )
  return new_state, {**metrics, "gen_loss": gen_loss}


def train_steps(
  state: TrainState,
  data: tuple[jax.Array, jax.Array],
  key: jax.Array,
  *,
  generator: PixelGenerator,
  critic: PixelCritic,
  config: PixelWGCSConfig,
  num_steps: int,
  data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """`num_steps` train steps in one `lax.scan`; metrics stacked, each (num_steps,)."""
  step = functools.partial(
    train_step,
    generator=generator,
    critic=critic,
    config=config,
    data_sharding=data_sharding,
  )
  return jax.lax.scan(lambda s, _: step(s, data, key), state, None, length=num_steps)


# Module level, so that runs with the same models, config and data shapes share a compilation.
_train_steps_jit = jax.jit(
  train_steps,
  static_argnames=("generator", "critic", "config", "num_steps", "data_sharding"),
  donate_argnums=0,
)


def train(
  x: jax.Array | np.ndarray,
  y: jax.Array | np.ndarray,
  *,
  num_classes: int,
  config: PixelWGCSConfig = PixelWGCSConfig(),
  seed: int = 0,
  mesh: Mesh | None = None,
) -> tuple[Params, dict[str, np.ndarray]]:
  """Trains G and its critic on the paired examples (x, y) alone.

  Args:
    x: (N,) int labels in [0, num_classes).
    y: (N, H, W, C) images, uint8 or float32 in [0, 1].
    num_classes: number of labels.
    config: hyperparameters.
    seed: all randomness (initialisation, batches, noise) derives from it.
    mesh: if given (`lsdm_jax.parallel.make_mesh`), batches are sharded over its 'data'
      axis and the state and data set are replicated.

  Returns:
    (generator parameters for `make_models(...)[0]`, history) where history holds per
    jitted call `step` (updates done), `w1_critic` and `gen_loss` (means over the call's
    updates) and `time` (seconds since the start).

  Raises:
    DataError: for malformed data; NonFiniteError: if training diverges.
  """
  x, y = check_paired(x, y, num_classes)
  generator, critic = make_models(y.shape[1:], num_classes, config)
  init_key, run_key = jax.random.split(jax.random.key(seed))
  state = create_train_state(generator, critic, config, jnp.asarray(y[:1]), init_key)
  state, data, data_sharding = place(state, x, y, config.batch_size, mesh)
  kwargs = {
    "generator": generator,
    "critic": critic,
    "config": step_config(config),
    "data_sharding": data_sharding,
  }
  state, history = train_in_calls(
    lambda s, n: _train_steps_jit(s, data, run_key, num_steps=n, **kwargs),
    state,
    steps=config.steps,
    steps_per_call=config.steps_per_call,
    names=("w1_critic", "gen_loss"),
    what="pixel WGCS",
    fix="lower config.lr or config.critic_lr",
  )
  return state.gen_params, history


# --------------------------------------------------------------------------- generation


def _generate(generator: PixelGenerator, params: Params, x: jax.Array, key: jax.Array):
  eta = noise_per_row(key, x.shape[0], generator.noise_dim)
  return generator.apply({"params": params}, eta, x)


def make_generate_fn(generator: PixelGenerator) -> Callable:
  """The jitted `generate(params, x, key) -> images (B, H, W, C) in [0, 1]`: one forward pass.

  x is (B,) int32 labels; row i's noise comes from fold_in(key, i), so an image depends on
  its key and row, not on how many are generated together.
  """
  return jax.jit(functools.partial(_generate, generator))


@dataclasses.dataclass(frozen=True)
class PixelWGCS:
  """A trained pixel-space generator: its definition and parameters.

  Attributes:
    generator: the generator module.
    params: its parameters.
  """

  generator: PixelGenerator
  params: Params

  @classmethod
  def fit(
    cls,
    x: jax.Array | np.ndarray,
    y: jax.Array | np.ndarray,
    *,
    num_classes: int,
    config: PixelWGCSConfig = PixelWGCSConfig(),
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[PixelWGCS, dict[str, np.ndarray]]:
    """`train`, returning the model with its history (see `train` for the arguments)."""
    params, history = train(x, y, num_classes=num_classes, config=config, seed=seed, mesh=mesh)
    generator, _ = make_models(np.shape(y)[1:], num_classes, config)
    return cls(generator, params), history

  @functools.cached_property
  def generate_fn(self) -> Callable:
    """The raw jitted `generate(params, x, key)` (see `make_generate_fn`)."""
    return make_generate_fn(self.generator)

  def generate(self, x, key: jax.Array, n: int | None = None) -> np.ndarray:
    """Images for labels x ((B,) or a scalar), each repeated `n` times (consecutive rows).

    Returns:
      (B·n, H, W, C) float32 in [0, 1], on the host.
    """
    x = requested_labels(x, self.generator.num_classes, n)
    return np.asarray(self.generate_fn(self.params, jnp.asarray(x), key))
