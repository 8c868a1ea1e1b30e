"""Baseline: consistency distillation of the latent diffusion model (a one-step peer of LSDM).

A consistency model f(z_t, t, x) maps any point of a probability-flow trajectory to its
start (Song et al., 2023). It is distilled from a trained `LatentDiffusion` teacher in the
same latent space: draw (x, z) and a grid index n of the teacher's `sampling_grid`, noise z
to level n, take one teacher DDIM step to n + 1, and regress f(z_n, n) on the target
network's f(ẑ_{n+1}, n + 1). The target is an EMA of the student (`target_decay`); the
student starts from the teacher's weights; f is the denoiser's clean estimate.

Sampling with k steps: f at pure noise, then k − 1 times re-noise (log-SNRs evenly spaced up
to `restart_logsnr`) and apply f. Settings: the `consistency` section of `base_config()`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lsdm_jax import loop
from lsdm_jax.baselines import latent_diffusion as ld
from lsdm_jax.baselines import paired_data
from lsdm_jax.errors import ConfigError

Params = Any


def check_config(section) -> None:
  """The `consistency` section's own rule: re-noising stays inside the teacher's range."""
  lo, hi = ld.LOGSNR_MIN, ld.LOGSNR_MAX
  if not lo < section.restart_logsnr < hi:
    raise ConfigError(
      f"consistency.restart_logsnr={section.restart_logsnr!r} must be in ({lo}, {hi})"
    )


def clean_estimate(model: ld.Denoiser, params, z_t, logsnr, x) -> jax.Array:
  """f(z_t, logsnr, x): the denoiser's estimate of the clean latent."""
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


@functools.partial(jax.jit, static_argnames=("model", "config", "num_steps"), donate_argnums=0)
def train_call(state, data, teacher, key, *, model, config, num_steps: int):
  """`num_steps` distillation steps in one `lax.scan`, step k's randomness from
  fold_in(key, k); params {'model' (the student), 'target', 'ema'}; mean `loss`."""
  tx = loop.make_optimizer(config)
  grid = jnp.asarray(ld.sampling_grid(config.grid_steps))
  x_all, z_all = data

  def body(s: loop.TrainState, _):
    k = jax.random.fold_in(key, s.step)
    k_idx, k_n, k_eps = jax.random.split(k, 3)
    x, z = paired_data.sample_batch(k_idx, x_all, z_all, (config.batch_size,))
    n = jax.random.randint(k_n, (config.batch_size,), 0, config.grid_steps)
    lo, hi = grid[n], grid[n + 1]  # lo: noisier.
    alpha, sigma = ld.alpha_sigma(lo[:, None])
    z_lo = alpha * z + sigma * jax.random.normal(k_eps, z.shape)
    z_hi = _teacher_step(model, teacher, z_lo, lo, hi, x)
    target = jax.lax.stop_gradient(clean_estimate(model, s.params["target"], z_hi, hi, x))

    def loss_fn(p):
      return jnp.mean(jnp.sum(jnp.square(clean_estimate(model, p, z_lo, lo, x) - target), -1))

    loss, grads = jax.value_and_grad(loss_fn)(s.params["model"])
    params, opt_state = loop.apply_gradients(tx, grads, s.opt_state, s.params["model"])
    decay = config.target_decay
    tgt = jax.tree.map(lambda t, p: decay * t + (1 - decay) * p, s.params["target"], params)
    ema = loop.ema_update(s.params["ema"], params, config.ema_decay, s.step)
    new = {"model": params, "target": tgt, "ema": ema}
    return loop.guarded_update(s, loop.all_finite(loss, grads), new, opt_state), {"loss": loss}

  state, metrics = jax.lax.scan(body, state, None, length=num_steps)
  return state, jax.tree.map(jnp.mean, metrics)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "restart_logsnr"))
def sample(model, params, x, key, *, num_steps: int = 1, restart_logsnr: float = 2.0):
  """z ~ p(z | x) in `num_steps` evaluations of the consistency model."""
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
  """A distilled consistency model: the teacher's denoiser, the student's EMA weights and
  the log-SNR the multistep sampler re-noises to."""

  model: ld.Denoiser
  params: Params
  restart_logsnr: float

  @classmethod
  def distill(
    cls,
    teacher: ld.LatentDiffusion,
    x,
    z,
    *,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
  ) -> tuple[ConsistencyModel, dict[str, np.ndarray]]:
    """Distils `teacher` on the pairs (x, z) it was trained on; `config`: the `consistency`
    section (None: defaults). Returns (the model, `loop.train_in_memory`'s history)."""
    config = paired_data.settings("consistency", config, check_config)
    model = teacher.model
    x = jnp.asarray(x)
    z = jnp.asarray(z, jnp.float32)
    params = jax.tree.map(jnp.copy, teacher.params)
    copies = {"target": jax.tree.map(jnp.copy, params), "ema": jax.tree.map(jnp.copy, params)}
    opt_state = loop.make_optimizer(config).init(params)
    state = loop.TrainState.create({"model": params, **copies}, opt_state)
    key, kw = jax.random.key(seed), {"model": model, "config": config}
    call = lambda s, n: train_call(s, (x, z), teacher.params, key, num_steps=n, **kw)  # noqa: E731
    state, history = loop.train_in_memory(
      "consistency", state, call, steps=config.steps, steps_per_call=config.steps_per_call
    )
    return cls(model, state.params["ema"], config.restart_logsnr), history

  def sample(self, x, key: jax.Array, num_steps: int = 1) -> jax.Array:
    """(B, latent_dim) standardised latents, one per condition, in `num_steps` steps."""
    if num_steps < 1:
      raise ConfigError(f"num_steps={num_steps}; use a positive integer")
    kw = {"num_steps": num_steps, "restart_logsnr": self.restart_logsnr}
    return sample(self.model, self.params, jnp.asarray(x), key, **kw)
