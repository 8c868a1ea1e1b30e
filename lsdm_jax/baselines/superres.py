"""Super-resolution baselines on LSDM's split, scored by the same `evaluate_superres`.

* `bicubic`: the low-resolution input resized by `jax.image.resize(..., 'cubic')`; needs
  no training and is the floor any learned method should beat in PSNR.
* `Regressor`: a small conv net trained by L2 regression on the *paired* examples only
  (input x, target y). It predicts E[y | x], the best PSNR a deterministic method can
  hope for, but averages the plausible images: blurry outputs, poor FD and recall.
  It refines the bicubic upsampling with a residual, so an untrained net is bicubic.

LSDM samples y ~ p(y | x) instead; the table in `experiments/superres_table.py` puts the
three side by side.
"""

from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.loop import format_duration


def bicubic(inputs, factor: int) -> np.ndarray:
  """(N, h, w, C) low-resolution images → (N, h·factor, w·factor, C), clipped to [0, 1]."""
  x = jnp.asarray(inputs, jnp.float32)
  n, h, w, c = x.shape
  up = jax.image.resize(x, (n, h * factor, w * factor, c), "cubic")
  return np.asarray(jnp.clip(up, 0.0, 1.0))


class Regressor(nn.Module):
  """x (B, h, w, C) in [0, 1] → y (B, h·f, w·f, C) in [0, 1]: bicubic + a conv residual."""

  factor: int
  features: tuple[int, ...] = (32, 32, 32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    up = jax.image.resize(x, (n, h * self.factor, w * self.factor, c), "cubic")
    r = 2.0 * up - 1.0
    for f in self.features:
      r = nn.gelu(nn.Conv(f, (3, 3))(r))
    r = nn.Conv(c, (3, 3), kernel_init=nn.initializers.zeros)(r)
    return jnp.clip(up + r, 0.0, 1.0)


@dataclasses.dataclass
class TrainedRegressor:
  """A trained `Regressor` and its parameters; `predict` maps inputs to outputs."""

  module: Regressor
  params: dict
  history: list[dict[str, float]]

  def predict(self, inputs, batch_size: int = 500) -> np.ndarray:
    fn = jax.jit(lambda p, x: self.module.apply({"params": p}, x))
    x = np.asarray(inputs, np.float32)
    return np.concatenate(
      [np.asarray(fn(self.params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )


def train_regressor(
  inputs,
  targets,
  factor: int,
  *,
  steps: int = 2000,
  batch_size: int = 64,
  learning_rate: float = 1e-3,
  features: tuple[int, ...] = (32, 32, 32),
  seed: int = 0,
  log_every: int = 500,
) -> TrainedRegressor:
  """Fits a `Regressor` by mean squared error on (inputs, targets) pairs.

  Args:
    inputs: (N, h, w, C) float32 [0, 1] low-resolution images (the paired x).
    targets: (N, h·factor, w·factor, C) float32 [0, 1] images (the paired y).
    factor: the upsampling factor.
    steps, batch_size, learning_rate: Adam with cosine decay; batches drawn with
      replacement from a key split from `seed`.
    features: channels of the hidden conv layers.
    seed: seeds initialisation and batches.
    log_every: steps between the entries of `history` (training MSE).
  """
  x, y = np.asarray(inputs, np.float32), np.asarray(targets, np.float32)
  if x.ndim != 4 or y.ndim != 4 or len(x) != len(y) or len(x) < 1:
    raise DataError(f"need paired (N, h, w, C) inputs and targets, got {x.shape} and {y.shape}")
  if y.shape[1:3] != (x.shape[1] * factor, x.shape[2] * factor):
    raise DataError(f"targets {y.shape} are not the inputs {x.shape} upsampled by {factor}")
  if steps < 1 or batch_size < 1:
    raise ConfigError(f"steps={steps} and batch_size={batch_size} must be positive")
  module = Regressor(factor, tuple(features))
  k_init, k_data = jax.random.split(jax.random.key(seed))
  params = module.init(k_init, jnp.zeros((1, *x.shape[1:])))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  opt_state = tx.init(params)
  x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)

  @jax.jit
  def step(params, opt_state, i):
    idx = jax.random.randint(jax.random.fold_in(k_data, i), (batch_size,), 0, len(x))

    def loss_fn(p):
      pred = module.apply({"params": p}, x_dev[idx])
      return jnp.mean(jnp.square(pred - y_dev[idx]))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = []
  start = time.perf_counter()
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, i)
    if (i + 1) % log_every == 0 or i + 1 == steps:
      loss = float(loss)
      if not np.isfinite(loss):
        raise DataError(f"the regression baseline's loss is {loss} at step {i + 1}")
      history.append({"step": i + 1, "mse": loss})
      rate = (i + 1) / (time.perf_counter() - start)
      logging.info(
        "L2 regression step %d/%d mse=%.4g | %.1f steps/s, ETA %s",
        i + 1,
        steps,
        loss,
        rate,
        format_duration((steps - i - 1) / rate),
      )
  return TrainedRegressor(module, params, history)


def evaluate_baselines(
  paired_inputs,
  paired_targets,
  test_inputs,
  test_targets,
  factor: int,
  net,
  *,
  steps: int = 2000,
  seed: int = 0,
) -> dict[str, dict[str, float]]:
  """Trains the regressor on the pairs and scores both baselines on the test pairs.

  Returns:
    {'bicubic': metrics, 'regression': metrics}, each from `evaluate_superres` (with
    `net` None: pixel metrics only), plus 'train_seconds' for the regressor.
  """
  from lsdm_jax.metrics.evaluate import evaluate_superres

  results = {}
  out = bicubic(test_inputs, factor)
  results["bicubic"] = evaluate_superres(out, test_inputs, test_targets, factor, net)
  t = time.perf_counter()
  model = train_regressor(paired_inputs, paired_targets, factor, steps=steps, seed=seed)
  elapsed = time.perf_counter() - t
  out = model.predict(test_inputs)
  results["regression"] = evaluate_superres(out, test_inputs, test_targets, factor, net)
  results["regression"]["train_seconds"] = elapsed
  return {k: {m: float(v) for m, v in d.items()} for k, d in results.items()}
