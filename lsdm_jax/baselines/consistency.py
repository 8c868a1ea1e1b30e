"""Baseline: consistency distillation of the latent diffusion model (a one-step peer of LSDM).

A consistency model f(z_t, t, x) maps any point of a probability-flow trajectory to its
start, so one evaluation turns noise into a latent, as LSDM's G does (Song et al., 2023,
consistency distillation). It is distilled from a trained `LatentDiffusion` teacher in the
same standardised latent space and decoded by the same D, so the comparison with LSDM
isolates how the one-step map is learnt: by matching distributions (LSDM) or by
compressing a diffusion model's trajectories (here).

Training, on the teacher's log-SNR grid of `grid_steps` steps (`sampling_grid`): draw
(x, z) and a grid index n, noise z to level n (z_n = α_n z + σ_n ε), take one DDIM step of
the teacher to level n + 1, and move the student so that f(z_n, n) matches the target
network's f(ẑ_{n+1}, n + 1) (squared error). The target network is an exponential moving
average of the student (`target_decay`); the student starts from the teacher's weights.
f is the denoiser's own clean-latent estimate, ẑ = α z_t − σ v̂, which tends to z_t at the
clean end of the grid (the boundary condition).

Sampling with k steps: f at pure noise, then k − 1 times re-noise to `restart_logsnr`
(evenly spaced log-SNRs up to it) and apply f again.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from lsdm_jax import loop
from lsdm_jax.baselines import latent_diffusion as ld
from lsdm_jax.baselines.paired_data import train_in_calls
from lsdm_jax.errors import ConfigError

Params = Any


@dataclasses.dataclass(frozen=True)
class ConsistencyConfig:
  """Hyperparameters of consistency distillation (`ConsistencyConfig(**d)`)."""

  steps: int = 2000  # optimiser steps
  batch_size: int = 256  # examples per step, drawn with replacement from the pairs
  lr: float = 1e-4  # Adam learning rate (constant after a linear warm-up)
  warmup_steps: int = 100  # linear learning-rate warm-up
  grad_clip: float = 1.0  # global gradient-norm clip
  grid_steps: int = 40  # teacher DDIM steps spanning the log-SNR range
  target_decay: float = 0.95  # EMA of the student that gives the targets (μ)
  ema_decay: float = 0.999  # EMA of the student to sample with
  restart_logsnr: float = 2.0  # log-SNR the multistep sampler re-noises to (last step)
  steps_per_call: int = 100  # optimiser steps fused in one jitted call

  def __post_init__(self):
    for name in ("steps", "batch_size", "grid_steps", "steps_per_call"):
      if getattr(self, name) < 1:
        raise ConfigError(f"consistency {name}={getattr(self, name)}; use a positive integer")
    for name in ("target_decay", "ema_decay"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(f"consistency {name}={getattr(self, name)}; use a value in [0, 1)")
    if not ld.LOGSNR_MIN < self.restart_logsnr < ld.LOGSNR_MAX:
      raise ConfigError(
        f"consistency restart_logsnr={self.restart_logsnr}; use a value in "
        f"({ld.LOGSNR_MIN}, {ld.LOGSNR_MAX})"
      )


@struct.dataclass
class State:
  step: jax.Array
  params: Params
  target: Params
  ema: Params
  opt_state: optax.OptState


def _optimizer(config: ConsistencyConfig) -> optax.GradientTransformation:
  warmup = min(config.warmup_steps, config.steps // 2)
  schedule = optax.linear_schedule(0.0, config.lr, max(warmup, 1))
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))


def clean_estimate(model: ld.Denoiser, params, z_t, logsnr, x) -> jax.Array:
  """f(z_t, logsnr, x): the denoiser's estimate of the clean latent (v or ε parameterised)."""
  t = jnp.broadcast_to(ld.t_from_logsnr(logsnr), (z_t.shape[0],))
  out = model.apply({"params": params}, z_t, t, x)
  alpha, sigma = ld.alpha_sigma(jnp.reshape(logsnr, (-1, 1)))
  if model.prediction == "v":
    return alpha * z_t - sigma * out
  return (z_t - sigma * out) / alpha


def _teacher_step(model, params, z_t, logsnr_t, logsnr_s, x) -> jax.Array:
  """One deterministic DDIM step of the teacher from log-SNR t to s (> t)."""
  z0 = clean_estimate(model, params, z_t, logsnr_t, x)
  alpha_t, sigma_t = ld.alpha_sigma(logsnr_t[:, None])
  alpha_s, sigma_s = ld.alpha_sigma(logsnr_s[:, None])
  eps = (z_t - alpha_t * z0) / sigma_t
  return alpha_s * z0 + sigma_s * eps


def _train_call(state, data, teacher, key, *, model, config, num_steps):
  tx = _optimizer(config)
  grid = jnp.asarray(ld.sampling_grid(config.grid_steps))
  x_all, z_all = data

  def body(s: State, _):
    k = jax.random.fold_in(key, s.step)
    k_idx, k_n, k_eps = jax.random.split(k, 3)
    idx = jax.random.randint(k_idx, (config.batch_size,), 0, z_all.shape[0])
    x, z = x_all[idx], z_all[idx]
    n = jax.random.randint(k_n, (config.batch_size,), 0, config.grid_steps)
    lo, hi = grid[n], grid[n + 1]  # lo: noisier.
    alpha, sigma = ld.alpha_sigma(lo[:, None])
    z_lo = alpha * z + sigma * jax.random.normal(k_eps, z.shape)
    z_hi = _teacher_step(model, teacher, z_lo, lo, hi, x)
    target = jax.lax.stop_gradient(clean_estimate(model, s.target, z_hi, hi, x))

    def loss_fn(p):
      return jnp.mean(jnp.sum(jnp.square(clean_estimate(model, p, z_lo, lo, x) - target), -1))

    loss, grads = jax.value_and_grad(loss_fn)(s.params)
    updates, opt_state = tx.update(grads, s.opt_state, s.params)
    params = optax.apply_updates(s.params, updates)
    tgt = jax.tree.map(
      lambda t, p: config.target_decay * t + (1 - config.target_decay) * p, s.target, params
    )
    ema = loop.ema_update(s.ema, params, config.ema_decay, s.step)
    return State(s.step + 1, params, tgt, ema, opt_state), {"loss": loss}

  return jax.lax.scan(body, state, None, length=num_steps)


_train_call_jit = jax.jit(
  _train_call, static_argnames=("model", "config", "num_steps"), donate_argnums=0
)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "restart_logsnr"))
def sample(model, params, x, key, *, num_steps: int = 1, restart_logsnr: float = 2.0):
  """z ~ p(z | x) in `num_steps` evaluations of the consistency model (see the module)."""
  b = x.shape[0]
  keys = jax.random.split(key, num_steps)
  z = jax.random.normal(keys[0], (b, model.latent_dim))
  z = clean_estimate(model, params, z, jnp.full((b,), ld.LOGSNR_MIN), x)
  levels = np.linspace(ld.LOGSNR_MIN, restart_logsnr, num_steps)[1:]
  for k, level in zip(keys[1:], levels, strict=True):
    alpha, sigma = ld.alpha_sigma(jnp.float32(level))
    z_t = alpha * z + sigma * jax.random.normal(k, z.shape)
    z = clean_estimate(model, params, z_t, jnp.full((b,), level, jnp.float32), x)
  return z


@dataclasses.dataclass(frozen=True)
class ConsistencyModel:
  """A distilled consistency model: the teacher's denoiser definition and its own weights."""

  model: ld.Denoiser
  params: Params
  config: ConsistencyConfig

  @classmethod
  def distill(
    cls,
    teacher: ld.LatentDiffusion,
    x,
    z,
    *,
    config: ConsistencyConfig = ConsistencyConfig(),
    seed: int = 0,
  ) -> tuple[ConsistencyModel, dict[str, np.ndarray]]:
    """Distils `teacher` on the pairs (x, z) it was trained on; returns (model, history)."""
    model = teacher.model
    x = jnp.asarray(x)
    z = jnp.asarray(z, jnp.float32)
    params = jax.tree.map(jnp.copy, teacher.params)
    state = State(
      jnp.zeros((), jnp.int32),
      params,
      jax.tree.map(jnp.copy, params),
      jax.tree.map(jnp.copy, params),
      _optimizer(config).init(params),
    )
    key = jax.random.key(seed)

    def call(s, n):
      return _train_call_jit(
        s, (x, z), teacher.params, key, model=model, config=config, num_steps=n
      )

    state, history = train_in_calls(
      call,
      state,
      steps=config.steps,
      steps_per_call=config.steps_per_call,
      names=("loss",),
      what="consistency distillation",
      fix="lower ConsistencyConfig.lr",
    )
    return cls(model, state.ema, config), history

  def sample(self, x, key, num_steps: int = 1) -> jax.Array:
    """(B, latent_dim) standardised latents, one per condition, in `num_steps` steps."""
    if num_steps < 1:
      raise ConfigError(f"num_steps={num_steps}; use a positive integer")
    return sample(
      self.model,
      self.params,
      jnp.asarray(x),
      key,
      num_steps=num_steps,
      restart_logsnr=self.config.restart_logsnr,
    )
