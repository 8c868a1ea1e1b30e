"""Baseline: conditional diffusion in the stage-1 latent space, decoded by the same D.

LSDM's stage 2 learns p(z | x) with a one-step generator; this baseline learns the same law
from the same paired latents (x, z = E(y)) with an iterative denoiser, so a comparison of
the two isolates the generator. Samples come from DDIM (deterministic with eta = 0), DDPM
ancestral steps or DPM-Solver++(2M), then y = D(z).

Noise schedule, in continuous time t ∈ [0, 1] (t = 0 is data): the cosine schedule on the
log signal-to-noise ratio, logsnr(t) = -2 log tan(a t + b), with a, b chosen so that logsnr
runs from LOGSNR_MAX to LOGSNR_MIN; α² = sigmoid(logsnr), σ² = sigmoid(-logsnr) and
z_t = α z + σ ε. Training draws t uniformly; samplers step on a grid uniform in logsnr
(`sampling_grid`).

The network predicts v = α ε - σ z (Salimans & Ho, 2022) by default. With ε-prediction the
first sampling steps compute ẑ = (z_t - σ ε̂) / α at α ≈ 0, where any error in ε̂ is
multiplied by 1/α (≈ 1800 at t = 1); v-prediction gives ẑ = α z_t - σ v̂ and ε̂ = σ z_t + α v̂
without a division. Measured on a 16-d, 10-class toy (500 latents, default config): the
per-class spread of a trained ε-model's samples is ~70x too large with DDIM or DPM-Solver++
at 10, 50 and 250 steps; the v-model's is within ~10% (DPM-Solver++, 10 steps). The v loss is
the ε-MSE weighted by 1/α² (‖v̂ - v‖² = ‖ε̂ - ε‖² / α²); `prediction='eps'` (plain ε-MSE)
remains available.

Classifier-free guidance (off by default): train with `cond_drop_prob > 0` (the condition
embedding is replaced by a learned null vector), then sample with `guidance_scale > 0`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding

from lsdm_jax import loop, parallel
from lsdm_jax.errors import ConfigError, DataError, NonFiniteError
from lsdm_jax.models.conditioning import ConditionEncoder

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0
PREDICTIONS = ("v", "eps")
SAMPLERS = ("ddim", "ddpm", "dpm++2m")

Params = Any


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  """Hyperparameters of the latent diffusion baseline (`DiffusionConfig(**cfg.to_dict())`)."""

  steps: int = 1000  # optimiser steps (more: lower FD, lower recall on 500 paired; README)
  batch_size: int = 256  # examples per step, drawn with replacement from the paired set
  lr: float = 1e-3  # peak Adam learning rate (linear warm-up, cosine decay to lr / 10)
  warmup_steps: int = 100  # linear learning-rate warm-up
  grad_clip: float = 1.0  # global gradient-norm clip
  ema_decay: float = 0.999  # EMA of the weights (warmed up as min(decay, (1+k)/(10+k)))
  width: int = 256  # hidden width of the residual MLP
  depth: int = 3  # number of residual blocks
  cond_features: int = 128  # width of the ConditionEncoder output
  time_features: int = 64  # size of the sinusoidal time embedding
  dropout: float = 0.0  # dropout in the residual blocks (regularises small paired sets)
  prediction: str = "v"  # network target: 'v' or 'eps'
  cond_drop_prob: float = 0.0  # classifier-free guidance: P(condition replaced by null)
  steps_per_call: int = 100  # optimiser steps fused with lax.scan into one jitted call

  def __post_init__(self):
    if self.prediction not in PREDICTIONS:
      raise ConfigError(f"prediction={self.prediction!r}; use one of {PREDICTIONS}")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ConfigError(f"cond_drop_prob={self.cond_drop_prob}; use a value in [0, 1)")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(f"ema_decay={self.ema_decay}; use a value in [0, 1)")
    for name in ("steps", "batch_size", "width", "depth", "steps_per_call"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)}; use a positive integer")


# --------------------------------------------------------------------------- schedule


def logsnr_schedule(t: jax.Array) -> jax.Array:
  """Cosine log-SNR at time t ∈ [0, 1] (any shape), from LOGSNR_MAX (t=0) to LOGSNR_MIN (t=1)."""
  t_min = math.atan(math.exp(-0.5 * LOGSNR_MAX))
  t_max = math.atan(math.exp(-0.5 * LOGSNR_MIN))
  return -2.0 * jnp.log(jnp.tan(t_min + t * (t_max - t_min)))


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(α, σ) with α² = sigmoid(logsnr), σ² = sigmoid(-logsnr), so α² + σ² = 1."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def timestep_embedding(t: jax.Array, features: int) -> jax.Array:
  """Sinusoidal embedding of t (B,) in [0, 1] → (B, features), on the scale of 1000 steps."""
  half = features // 2
  freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
  args = 1000.0 * t[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


# --------------------------------------------------------------------------- model


class ResBlock(nn.Module):
  """Pre-norm residual MLP block; the embedding modulates it by a scale and shift (FiLM)."""

  width: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    r = nn.LayerNorm(use_scale=False, use_bias=False)(h)
    # Zero-initialised modulation and output: each block starts as the identity.
    scale, shift = jnp.split(
      nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros)(emb), 2, -1
    )
    r = r * (1.0 + scale) + shift
    r = nn.gelu(nn.Dense(self.width)(r))
    r = nn.Dropout(self.dropout, deterministic=not train)(r)
    return h + nn.Dense(self.width, kernel_init=nn.initializers.zeros)(r)


class Denoiser(nn.Module):
  """Predicts v (or ε) from the noisy latent z_t, the time t and the condition x.

  Attributes:
    latent_dim: size of z.
    cond_kind: 'label' or 'image' (see `ConditionEncoder`).
    num_classes: label table size (kind 'label').
    width: hidden width.
    depth: number of residual blocks.
    cond_features: width of the condition embedding.
    time_features: size of the sinusoidal time embedding.
    dropout: dropout rate inside the residual blocks (training only).
    prediction: 'v' or 'eps'; what the output means (used by the sampler).
  """

  latent_dim: int
  cond_kind: str
  num_classes: int = 0
  width: int = 256
  depth: int = 3
  cond_features: int = 128
  time_features: int = 64
  dropout: float = 0.0
  prediction: str = "v"

  @nn.compact
  def __call__(
    self,
    z_t: jax.Array,
    t: jax.Array,
    x: jax.Array,
    drop: jax.Array | None = None,
    train: bool = False,
  ) -> jax.Array:
    """Args: z_t (B, latent_dim); t (B,) in [0, 1]; x (B,) int32 or (B, h, w, c) in [0, 1];
    drop (B,) bool, where the condition is replaced by the null embedding (guidance);
    train: enables dropout (needs a 'dropout' rng).

    Returns: (B, latent_dim), the predicted v or ε.
    """
    temb = timestep_embedding(t, self.time_features)
    temb = nn.Dense(self.width)(nn.gelu(nn.Dense(self.width)(temb)))
    c = ConditionEncoder(self.cond_kind, self.num_classes, self.cond_features)(x)
    null = self.param("null_cond", nn.initializers.normal(0.02), (self.cond_features,))
    if drop is not None:
      c = jnp.where(drop[:, None], null[None, :], c)
    emb = nn.gelu(temb + nn.Dense(self.width)(c))
    h = nn.Dense(self.width)(z_t) + emb
    for _ in range(self.depth):
      h = ResBlock(self.width, self.dropout)(h, emb, train)
    h = nn.gelu(nn.LayerNorm()(h))
    return nn.Dense(self.latent_dim, kernel_init=nn.initializers.zeros)(h)


def make_denoiser(
  latent_dim: int, *, cond_kind: str, num_classes: int = 0, config: DiffusionConfig
) -> Denoiser:
  """The `Denoiser` that `train` builds for latents of size `latent_dim`."""
  if cond_kind not in ("label", "image"):
    raise ConfigError(f"cond_kind={cond_kind!r}; use 'label' or 'image'")
  if cond_kind == "label" and num_classes < 1:
    raise ConfigError("cond_kind='label' needs num_classes >= 1")
  return Denoiser(
    latent_dim=latent_dim,
    cond_kind=cond_kind,
    num_classes=num_classes,
    width=config.width,
    depth=config.depth,
    cond_features=config.cond_features,
    time_features=config.time_features,
    dropout=config.dropout,
    prediction=config.prediction,
  )


# --------------------------------------------------------------------------- training


@struct.dataclass
class TrainState:
  """Optimiser state; `ema_params` are the weights to sample with."""

  step: jax.Array
  params: Params
  ema_params: Params
  opt_state: optax.OptState


def make_optimizer(config: DiffusionConfig) -> optax.GradientTransformation:
  """Adam with linear warm-up, cosine decay to lr / 10 and global-norm clipping."""
  # At most half the run warms up, so that short runs still decay.
  warmup = min(config.warmup_steps, config.steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, config.lr, warmup, max(config.steps, 1), config.lr / 10
  )
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))


@functools.partial(jax.jit, static_argnames=("model", "config"))
def create_train_state(
  model: Denoiser, config: DiffusionConfig, x: jax.Array, key: jax.Array
) -> TrainState:
  """Initial state; x: a batch of conditions (only its shape and dtype are used).

  Jitted: run op by op, the initialisers would each compile a small executable first.
  """
  tx = make_optimizer(config)
  z = jnp.zeros((x.shape[0], model.latent_dim), jnp.float32)
  params = model.init(key, z, jnp.zeros((x.shape[0],), jnp.float32), x)["params"]
  # A copy, not an alias: the train step donates the state, and one buffer cannot be donated twice.
  ema_params = jax.tree.map(jnp.copy, params)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=ema_params,
    opt_state=tx.init(params),
  )


def loss_fn(
  params: Params,
  model: Denoiser,
  x: jax.Array,
  z: jax.Array,
  key: jax.Array,
  cond_drop_prob: float = 0.0,
) -> jax.Array:
  """Mean squared error of the network's target (v or ε) at random times.

  Args:
    params: denoiser parameters.
    model: the denoiser.
    x: conditions (B,) or (B, h, w, c).
    z: clean standardised latents (B, d).
    key: randomness for t, ε and the condition dropout.
    cond_drop_prob: probability of replacing the condition by the null embedding.

  Returns:
    Scalar loss.
  """
  b = z.shape[0]
  k_t, k_eps, k_drop, k_dropout = jax.random.split(key, 4)
  # Stratified times (one per 1/B interval, shared random offset): lower-variance loss.
  t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / b, 1.0)
  eps = jax.random.normal(k_eps, z.shape, z.dtype)
  alpha, sigma = alpha_sigma(logsnr_schedule(t)[:, None])
  z_t = alpha * z + sigma * eps
  drop = jax.random.bernoulli(k_drop, cond_drop_prob, (b,)) if cond_drop_prob > 0 else None
  out = model.apply({"params": params}, z_t, t, x, drop, train=True, rngs={"dropout": k_dropout})
  target = alpha * eps - sigma * z if model.prediction == "v" else eps
  return jnp.mean(jnp.square(out - target))


def train_step(
  state: TrainState,
  batch: tuple[jax.Array, jax.Array],
  key: jax.Array,
  *,
  model: Denoiser,
  config: DiffusionConfig,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on batch = (x (B, ...), z (B, d)); the noise is fold_in(key, step)."""
  tx = make_optimizer(config)
  x, z = batch
  step_key = jax.random.fold_in(key, state.step)
  loss, grads = jax.value_and_grad(loss_fn)(
    state.params, model, x, z, step_key, config.cond_drop_prob
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = loop.ema_update(state.ema_params, params, config.ema_decay, state.step)
  new_state = TrainState(state.step + 1, params, ema, opt_state)
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def train_steps(
  state: TrainState,
  data: tuple[jax.Array, jax.Array],
  key: jax.Array,
  *,
  model: Denoiser,
  config: DiffusionConfig,
  num_steps: int,
  data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """`num_steps` train steps in one `lax.scan`, each on a batch drawn from the whole data set.

  Args:
    state: train state.
    data: (x (N, ...), z (N, d)), the full paired set (it is small: keep it on device).
    key: the run's key; step k draws its batch and noise from fold_in(key, k).
    model, config: the denoiser and hyperparameters (the optimiser is `make_optimizer`).
    num_steps: steps in this call.
    data_sharding: if set, each batch is sharded this way (data parallelism).

  Returns:
    The new state and metrics stacked over the steps, each (num_steps,).
  """
  x_all, z_all = data
  batch_key = jax.random.fold_in(key, 1)
  noise_key = jax.random.fold_in(key, 2)

  def body(s: TrainState, _):
    idx = jax.random.randint(
      jax.random.fold_in(batch_key, s.step), (config.batch_size,), 0, z_all.shape[0]
    )
    batch = (x_all[idx], z_all[idx])
    if data_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, data_sharding)
    return train_step(s, batch, noise_key, model=model, config=config)

  return jax.lax.scan(body, state, None, length=num_steps)


# Module level, so that runs with the same model, config and data shapes share one compilation.
_train_steps_jit = jax.jit(
  train_steps, static_argnames=("model", "config", "num_steps", "data_sharding"), donate_argnums=0
)


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


def train(
  x: jax.Array | np.ndarray,
  z: jax.Array | np.ndarray,
  *,
  cond_kind: str,
  num_classes: int = 0,
  config: DiffusionConfig = DiffusionConfig(),
  seed: int = 0,
  mesh: Mesh | None = None,
) -> tuple[Params, dict[str, np.ndarray]]:
  """Trains the conditional denoiser on paired latents.

  Args:
    x: conditions, (N,) int32 labels or (N, h, w, c) float32 images in [0, 1].
    z: standardised latents (N, d) float32.
    cond_kind: 'label' or 'image'.
    num_classes: number of labels (kind 'label').
    config: hyperparameters.
    seed: all randomness (initialisation, batches, noise) derives from it.
    mesh: if given (`lsdm_jax.parallel.make_mesh`, Auto axes), batches are sharded over its
      'data' axis and the state and data set are replicated.

  Returns:
    (EMA parameters for `make_denoiser(d, ...)`, history) where history holds per jitted
    call `step` (steps done), `loss` (mean over the call's steps) and `time` (seconds).
  """
  x = np.asarray(x)
  z = np.asarray(z, np.float32)
  _check_data(x, z, cond_kind, num_classes)
  x = x.astype(np.int32) if cond_kind == "label" else x.astype(np.float32)
  model = make_denoiser(z.shape[1], cond_kind=cond_kind, num_classes=num_classes, config=config)
  if mesh is not None:
    parallel.check_batch_size(config.batch_size, mesh, "batch_size")
  init_key, run_key = jax.random.split(jax.random.key(seed))
  state = create_train_state(model, config, jnp.asarray(x[:1]), init_key)
  data = (jnp.asarray(x), jnp.asarray(z))
  data_sharding = None
  if mesh is not None:
    data_sharding = parallel.data_sharding(mesh)
    state, data = jax.device_put((state, data), parallel.replicated(mesh))

  history: dict[str, list] = {"step": [], "loss": [], "time": []}
  start = time.perf_counter()
  done = 0
  while done < config.steps:
    n = min(config.steps_per_call, config.steps - done)
    state, metrics = _train_steps_jit(
      state, data, run_key, model=model, config=config, num_steps=n, data_sharding=data_sharding
    )
    # Blocking here also avoids jax 0.10's CPU all-reduce deadlock on back-to-back dispatch.
    loss = float(jnp.mean(metrics["loss"]).block_until_ready())
    done += n
    if not math.isfinite(loss):
      raise NonFiniteError(
        f"latent diffusion loss is {loss} at step {done}; lower config.lr or check z"
      )
    history["step"].append(done)
    history["loss"].append(loss)
    history["time"].append(time.perf_counter() - start)
  return state.ema_params, {k: np.asarray(v) for k, v in history.items()}


# --------------------------------------------------------------------------- sampling


def sampling_grid(num_steps: int) -> np.ndarray:
  """(num_steps + 1,) log-SNRs from LOGSNR_MIN (pure noise) to LOGSNR_MAX, uniform in log-SNR.

  Uniform in log-SNR rather than in t: every scale of the data gets the same number of steps,
  which matters for narrow conditionals (a sharp p(z | x) needs steps at high SNR, where a
  uniform-t cosine grid has few). Tested against the exact denoiser of Gaussian data.
  """
  return np.linspace(LOGSNR_MIN, LOGSNR_MAX, num_steps + 1, dtype=np.float32)


def t_from_logsnr(logsnr: jax.Array) -> jax.Array:
  """Inverse of `logsnr_schedule`."""
  t_min = math.atan(math.exp(-0.5 * LOGSNR_MAX))
  t_max = math.atan(math.exp(-0.5 * LOGSNR_MIN))
  return (jnp.arctan(jnp.exp(-0.5 * logsnr)) - t_min) / (t_max - t_min)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "sampler", "guidance_scale"))
def sample(
  model: Denoiser,
  params: Params,
  x: jax.Array,
  key: jax.Array,
  *,
  num_steps: int = 50,
  sampler: str = "ddim",
  eta: float = 0.0,
  guidance_scale: float = 0.0,
) -> jax.Array:
  """Draws z ~ p(z | x), one latent per condition; compiled once per (model, num_steps, ...).

  All samplers use `num_steps` network evaluations on the `sampling_grid` (uniform in
  log-SNR) and return z at logsnr = LOGSNR_MAX (noise std 5.5e-4, divided out by α).

  Args:
    model: the denoiser (from `make_denoiser`).
    params: its parameters (the EMA parameters `train` returns).
    x: conditions, (B,) int32 or (B, h, w, c) float32 in [0, 1].
    key: randomness (initial noise, and the step noise of stochastic samplers).
    num_steps: number of denoising steps (network evaluations).
    sampler: 'ddim' (first order; noise scale `eta`, 0 = deterministic given the initial
      noise); 'ddpm' (ancestral sampling from the posterior q(z_s | z_t, ẑ), i.e. DDIM with
      eta = 1; `eta` is ignored); 'dpm++2m' (DPM-Solver++(2M), Lu et al. 2022: deterministic,
      second order, the most accurate in few steps; `eta` is ignored).
    eta: DDIM stochasticity in [0, 1].
    guidance_scale: classifier-free guidance w ≥ 0 (out = (1 + w) cond - w uncond); needs a
      model trained with cond_drop_prob > 0.

  Returns:
    (B, latent_dim) standardised latents, for the stage-1 decoder.
  """
  if sampler not in SAMPLERS:
    raise ConfigError(f"sampler={sampler!r}; use one of {SAMPLERS}")
  if num_steps < 1:
    raise ConfigError(f"num_steps={num_steps}; use a positive integer")
  eta = 1.0 if sampler == "ddpm" else eta
  b = x.shape[0]
  init_key, noise_key = jax.random.split(key)
  grid = jnp.asarray(sampling_grid(num_steps))

  def predict(z_t: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ẑ, ε̂) at noise level logsnr."""
    tb = jnp.full((b,), t_from_logsnr(logsnr))
    if guidance_scale == 0.0:
      out = model.apply({"params": params}, z_t, tb, x)
    else:
      both = model.apply(
        {"params": params},
        jnp.concatenate([z_t, z_t]),
        jnp.concatenate([tb, tb]),
        jnp.concatenate([x, x]),
        jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)]),
      )
      out = both[:b] + guidance_scale * (both[:b] - both[b:])
    alpha, sigma = alpha_sigma(logsnr)
    if model.prediction == "v":
      return alpha * z_t - sigma * out, sigma * z_t + alpha * out
    return (z_t - sigma * out) / alpha, out

  def ddim_step(j: int, z_t: jax.Array) -> jax.Array:
    logsnr_t, logsnr_s = grid[j], grid[j + 1]
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    z0, eps = predict(z_t, logsnr_t)
    # c² = eta² · Var[q(z_s | z_t, z0)] = eta² σ_s² (1 - SNR_t / SNR_s).
    c = eta * sigma_s * jnp.sqrt(-jnp.expm1(logsnr_t - logsnr_s))
    noise = jax.random.normal(jax.random.fold_in(noise_key, j), z_t.shape, z_t.dtype)
    return alpha_s * z0 + jnp.sqrt(jnp.maximum(sigma_s**2 - c**2, 0.0)) * eps + c * noise

  def dpm_step(j: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    # Multistep: the previous step's ẑ gives a second-order correction, at no extra cost.
    z_t, z0_prev = carry
    logsnr_t, logsnr_s = grid[j], grid[j + 1]
    _, sigma_t = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    z0, _ = predict(z_t, logsnr_t)
    h = 0.5 * (logsnr_s - logsnr_t)  # step in log(α/σ)
    h_prev = 0.5 * (logsnr_t - grid[jnp.maximum(j - 1, 0)])
    d = jnp.where(j == 0, z0, z0 + 0.5 * h / jnp.where(j == 0, h, h_prev) * (z0 - z0_prev))
    return (sigma_s / sigma_t) * z_t - alpha_s * jnp.expm1(-h) * d, z0

  z = jax.random.normal(init_key, (b, model.latent_dim), jnp.float32)
  if sampler == "dpm++2m":
    z, _ = jax.lax.fori_loop(0, num_steps, dpm_step, (z, jnp.zeros_like(z)))
  else:
    z = jax.lax.fori_loop(0, num_steps, ddim_step, z)
  return z / alpha_sigma(grid[-1])[0]


@dataclasses.dataclass(frozen=True)
class LatentDiffusion:
  """A trained latent diffusion model: definition and (EMA) parameters.

  Attributes:
    model: the denoiser.
    params: its parameters.
  """

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
    config: DiffusionConfig = DiffusionConfig(),
    seed: int = 0,
    mesh: Mesh | None = None,
  ) -> tuple[LatentDiffusion, dict[str, np.ndarray]]:
    """`train`, returning the model with its history (see `train` for the arguments)."""
    params, history = train(
      x, z, cond_kind=cond_kind, num_classes=num_classes, config=config, seed=seed, mesh=mesh
    )
    model = make_denoiser(
      np.shape(z)[1], cond_kind=cond_kind, num_classes=num_classes, config=config
    )
    return cls(model, params), history

  def sample(
    self,
    x: jax.Array,
    key: jax.Array,
    num_steps: int = 50,
    *,
    sampler: str = "ddim",
    eta: float = 0.0,
    guidance_scale: float = 0.0,
  ) -> jax.Array:
    """z ~ p(z | x), (B, latent_dim); see `sample`."""
    return sample(
      self.model,
      self.params,
      x,
      key,
      num_steps=num_steps,
      sampler=sampler,
      eta=eta,
      guidance_scale=guidance_scale,
    )
