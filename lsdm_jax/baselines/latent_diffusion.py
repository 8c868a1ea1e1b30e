"""Baseline: conditional diffusion in the stage-1 latent space, decoded by the same D.

Learns p(z | x) from the paired latents (x, z = E(y)) with an iterative denoiser instead of
LSDM's one-step generator; samples come from DDIM on a grid uniform in log-SNR.

Schedule (t ∈ [0, 1], t = 0 is data): logsnr(t) = -2 log tan(a t + b), from LOGSNR_MAX to
LOGSNR_MIN; α² = sigmoid(logsnr), σ² = sigmoid(-logsnr), z_t = α z + σ ε. The network
predicts v = α ε - σ z by default (ẑ = α z_t - σ v̂ needs no division by α), or ε
(`prediction='eps'`). Settings: the `latent_diffusion` section of `base_config()`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from lsdm_jax import config as config_lib
from lsdm_jax import loop
from lsdm_jax.baselines import paired_data
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.models.conditioning import ConditionEncoder

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0  # The schedule's log-SNR at t = 1 and t = 0.
PREDICTIONS = ("v", "eps")

# The schedule's tan(a t + b) runs from tan(_T_MIN) at t = 0 to tan(_T_MAX) at t = 1.
_T_MIN = math.atan(math.exp(-0.5 * LOGSNR_MAX))
_T_MAX = math.atan(math.exp(-0.5 * LOGSNR_MIN))

Params = Any


def check_config(section) -> None:
  """The `latent_diffusion` section's own rule: the network's target."""
  config_lib.check_choice(section.prediction, PREDICTIONS, "latent_diffusion.prediction")


def logsnr_schedule(t: jax.Array) -> jax.Array:
  """Cosine log-SNR at t ∈ [0, 1], from LOGSNR_MAX (t=0) to LOGSNR_MIN (t=1)."""
  return -2.0 * jnp.log(jnp.tan(_T_MIN + t * (_T_MAX - _T_MIN)))


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(α, σ) with α² = sigmoid(logsnr), σ² = sigmoid(-logsnr)."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def timestep_embedding(t: jax.Array, features: int) -> jax.Array:
  """Sinusoidal embedding of t (B,) in [0, 1] → (B, features), t scaled by 1000."""
  half = features // 2
  freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
  args = 1000.0 * t[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResBlock(nn.Module):
  """Pre-norm residual MLP block, FiLM-modulated by the embedding; starts as the identity."""

  width: int

  @nn.compact
  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    r = nn.LayerNorm(use_scale=False, use_bias=False)(h)
    scale, shift = jnp.split(
      nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros)(emb), 2, -1
    )
    r = r * (1.0 + scale) + shift
    r = nn.gelu(nn.Dense(self.width)(r))
    return h + nn.Dense(self.width, kernel_init=nn.initializers.zeros)(r)


class Denoiser(nn.Module):
  """Predicts v (or ε, per `prediction`) from the noisy latent z_t, time t and condition x."""

  latent_dim: int
  cond_kind: str
  num_classes: int = 0
  width: int = 256
  depth: int = 3
  cond_features: int = 128
  time_features: int = 64
  prediction: str = "v"

  @nn.compact
  def __call__(self, z_t: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """z_t (B, d), t (B,), x (B,) int32 or (B, h, w, c) → (B, d)."""
    temb = timestep_embedding(t, self.time_features)
    temb = nn.Dense(self.width)(nn.gelu(nn.Dense(self.width)(temb)))
    c = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)(x)
    emb = nn.gelu(temb + nn.Dense(self.width)(c))
    h = nn.Dense(self.width)(z_t) + emb
    for _ in range(self.depth):
      h = ResBlock(self.width)(h, emb)
    h = nn.gelu(nn.LayerNorm()(h))
    return nn.Dense(self.latent_dim, kernel_init=nn.initializers.zeros)(h)


def make_denoiser(
  latent_dim: int, *, cond_kind: str, num_classes: int = 0, config: ml_collections.ConfigDict
) -> Denoiser:
  """The `Denoiser` of `config` (a `latent_diffusion` section)."""
  if cond_kind not in ("label", "image"):
    raise ConfigError(f"cond_kind={cond_kind!r}; use 'label' or 'image'")
  if cond_kind == "label" and num_classes < 1:
    raise ConfigError("cond_kind='label' needs num_classes >= 1")
  fields = ("width", "depth", "cond_features", "time_features", "prediction")
  return Denoiser(latent_dim, cond_kind, num_classes, **{k: config[k] for k in fields})


@functools.partial(jax.jit, static_argnames=("model", "config"))
def init_state(model: Denoiser, config, x: jax.Array, key: jax.Array) -> loop.TrainState:
  """State with params {'model', 'ema'}; x: example conditions (shape and dtype only)."""
  z = jnp.zeros((x.shape[0], model.latent_dim), jnp.float32)
  params = model.init(key, z, jnp.zeros((x.shape[0],), jnp.float32), x)["params"]
  # A copy: the donated state cannot hold one buffer twice.
  ema = jax.tree.map(jnp.copy, params)
  return loop.TrainState.create(
    {"model": params, "ema": ema}, loop.make_optimizer(config).init(params)
  )


def loss_fn(params: Params, model: Denoiser, x: jax.Array, z: jax.Array, key: jax.Array):
  """MSE of the network's target (v or ε) at stratified random times, for conditions x and
  clean latents z (B, d); `key` draws t and ε."""
  b = z.shape[0]
  k_t, k_eps = jax.random.split(key, 4)[:2]
  t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / b, 1.0)
  eps = jax.random.normal(k_eps, z.shape, z.dtype)
  alpha, sigma = alpha_sigma(logsnr_schedule(t)[:, None])
  z_t = alpha * z + sigma * eps
  out = model.apply({"params": params}, z_t, t, x)
  target = alpha * eps - sigma * z if model.prediction == "v" else eps
  return jnp.mean(jnp.square(out - target))


@functools.partial(
  jax.jit, static_argnames=("model", "config", "num_steps", "sharding"), donate_argnums=0
)
def train_call(state, data, key, *, model: Denoiser, config, num_steps: int, sharding=None):
  """`num_steps` steps in one `lax.scan` on data = (x (N, ...), z (N, d)); step k's batch
  comes from fold_in(fold_in(key, 1), k), its noise from fold_in(fold_in(key, 2), k).
  Returns the state and the mean `loss` and `grad_norm`."""
  tx = loop.make_optimizer(config)
  x_all, z_all = data
  batch_key, noise_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)

  def body(s: loop.TrainState, _):
    batch = paired_data.sample_batch(
      jax.random.fold_in(batch_key, s.step), x_all, z_all, (config.batch_size,)
    )
    x, z = paired_data.constrain(batch, sharding)
    step_key = jax.random.fold_in(noise_key, s.step)
    p = s.params["model"]
    loss, grads = jax.value_and_grad(loss_fn)(p, model, x, z, step_key)
    p, opt_state = loop.apply_gradients(tx, grads, s.opt_state, p)
    ema = loop.ema_update(s.params["ema"], p, config.ema_decay, s.step)
    finite = loop.all_finite(loss, grads)
    s = loop.guarded_update(s, finite, {"model": p, "ema": ema}, opt_state)
    return s, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  state, metrics = jax.lax.scan(body, state, None, length=num_steps)
  return state, jax.tree.map(jnp.mean, metrics)


def _check_data(x: np.ndarray, z: np.ndarray, cond_kind: str, num_classes: int) -> None:
  if z.ndim != 2 or z.shape[0] != x.shape[0] or z.shape[0] == 0:
    raise DataError(f"need z (N, d) with N = len(x) > 0; got x {x.shape} and z {z.shape}")
  if cond_kind == "label" and x.ndim != 1:
    raise DataError(f"cond_kind='label' needs x of shape (N,); got {x.shape}")
  if cond_kind == "label" and (x.min() < 0 or x.max() >= num_classes):
    raise DataError(f"labels must lie in [0, {num_classes}); got [{x.min()}, {x.max()}]")
  if cond_kind == "image" and x.ndim != 4:
    raise DataError(f"cond_kind='image' needs x of shape (N, h, w, c); got {x.shape}")
  if not np.all(np.isfinite(z)):
    raise DataError("z holds NaN or infinite values; re-run the encode stage")


def sampling_grid(num_steps: int) -> np.ndarray:
  """(num_steps + 1,) log-SNRs uniform from LOGSNR_MIN (noise) to LOGSNR_MAX: unlike a
  uniform-t grid, it keeps steps at high SNR, which sharp conditionals need."""
  return np.linspace(LOGSNR_MIN, LOGSNR_MAX, num_steps + 1, dtype=np.float32)


def t_from_logsnr(logsnr: jax.Array) -> jax.Array:
  """Inverse of `logsnr_schedule`."""
  return (jnp.arctan(jnp.exp(-0.5 * logsnr)) - _T_MIN) / (_T_MAX - _T_MIN)


@functools.partial(jax.jit, static_argnames=("model", "num_steps"))
def sample(
  model: Denoiser, params: Params, x: jax.Array, key: jax.Array, *, num_steps: int = 50
) -> jax.Array:
  """z ~ p(z | x) (B, latent_dim) by deterministic DDIM: `num_steps` evaluations on
  `sampling_grid`, ending at LOGSNR_MAX and divided by α there; x: conditions, (B,) int32
  or (B, h, w, c) float32 in [0, 1]; `key` draws the initial noise."""
  if num_steps < 1:
    raise ConfigError(f"num_steps={num_steps}; use a positive integer")
  b = x.shape[0]
  init_key = jax.random.split(key)[0]
  grid = jnp.asarray(sampling_grid(num_steps))

  def predict(z_t: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ẑ, ε̂) at noise level logsnr."""
    out = model.apply({"params": params}, z_t, jnp.full((b,), t_from_logsnr(logsnr)), x)
    alpha, sigma = alpha_sigma(logsnr)
    if model.prediction == "v":
      return alpha * z_t - sigma * out, sigma * z_t + alpha * out
    return (z_t - sigma * out) / alpha, out

  def ddim_step(j: int, z_t: jax.Array) -> jax.Array:
    alpha_s, sigma_s = alpha_sigma(grid[j + 1])
    z0, eps = predict(z_t, grid[j])
    return alpha_s * z0 + sigma_s * eps

  z = jax.random.normal(init_key, (b, model.latent_dim), jnp.float32)
  z = jax.lax.fori_loop(0, num_steps, ddim_step, z)
  return z / alpha_sigma(grid[-1])[0]


@dataclasses.dataclass(frozen=True)
class LatentDiffusion:
  """A trained latent diffusion model: the denoiser and its EMA parameters."""

  model: Denoiser
  params: Params

  @classmethod
  def fit(
    cls,
    x: jax.Array | np.ndarray,
    z: jax.Array | np.ndarray,
    *,
    cond_kind: str,
    num_classes: int = 0,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[LatentDiffusion, dict[str, np.ndarray]]:
    """Trains the denoiser on conditions x ((N,) int32 labels or (N, h, w, c) images in
    [0, 1]) and standardised latents z (N, d); `config`: the `latent_diffusion` section
    (None: defaults); seed, mesh: see `paired_data.train_pairs`. Returns (model, history)."""
    config = paired_data.settings("latent_diffusion", config, check_config)
    x = np.asarray(x)
    z = np.asarray(z, np.float32)
    _check_data(x, z, cond_kind, num_classes)
    x = x.astype(np.int32) if cond_kind == "label" else x.astype(np.float32)
    model = make_denoiser(z.shape[1], cond_kind=cond_kind, num_classes=num_classes, config=config)
    init = lambda k: init_state(model, config, jnp.asarray(x[:1]), k)  # noqa: E731
    kw = {"seed": seed, "mesh": mesh, "model": model, "config": config}
    state, history = paired_data.train_pairs(
      "latent_diffusion", config, x, z, init, train_call, **kw
    )
    return cls(model, state.params["ema"]), history

  def sample(self, x: jax.Array, key: jax.Array, num_steps: int = 50) -> jax.Array:
    """z ~ p(z | x), (B, latent_dim); see `sample`."""
    return sample(self.model, self.params, x, key, num_steps=num_steps)
