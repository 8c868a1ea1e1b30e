"""Super-resolution baselines on LSDM's split, scored by the same `evaluate_superres`.

* `bicubic`: the input resized by `jax.image.resize(..., 'cubic')`, the floor in PSNR.
* `Regressor`: a small conv net, bicubic plus a residual, trained by L2 on the paired
  examples: it predicts E[y | x], the best PSNR a deterministic method can reach, but blurry
  (poor FD and recall). Settings: the `superres_regressor` section of `base_config()`.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lsdm_jax import loop
from lsdm_jax.baselines import paired_data
from lsdm_jax.errors import DataError
from lsdm_jax.metrics.scores import evaluate_superres


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
  """A trained `Regressor`, its parameters and training history."""

  module: Regressor
  params: dict
  history: dict[str, np.ndarray]

  def predict(self, inputs, batch_size: int = 500) -> np.ndarray:
    fn = jax.jit(lambda p, x: self.module.apply({"params": p}, x))
    x = np.asarray(inputs, np.float32)
    return np.concatenate(
      [np.asarray(fn(self.params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )


@functools.partial(jax.jit, static_argnames=("module", "config"), donate_argnums=0)
def _train_step(state, data, key, *, module, config):
  """One Adam step of the mean squared error, its batch drawn from fold_in(key, step)."""
  tx = loop.make_optimizer(config)
  x, y = paired_data.sample_batch(jax.random.fold_in(key, state.step), *data, (config.batch_size,))

  def loss_fn(p):
    return jnp.mean(jnp.square(module.apply({"params": p}, x) - y))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  params, opt_state = loop.apply_gradients(tx, grads, state.opt_state, state.params)
  return loop.guarded_update(state, loop.all_finite(loss, grads), params, opt_state), {"mse": loss}


def train_regressor(
  inputs, targets, factor: int, *, config: ml_collections.ConfigDict | None = None, seed: int = 0
) -> TrainedRegressor:
  """Fits a `Regressor` by MSE on inputs (N, h, w, C) and targets (N, h·factor, w·factor, C)
  in [0, 1]; `config`: the `superres_regressor` section (None: defaults). The history
  holds, per call, the last step's `mse`."""
  config = paired_data.settings("superres_regressor", config)
  x, y = np.asarray(inputs, np.float32), np.asarray(targets, np.float32)
  if x.ndim != 4 or y.ndim != 4 or len(x) != len(y) or len(x) < 1:
    raise DataError(f"need paired (N, h, w, C) inputs and targets, got {x.shape} and {y.shape}")
  if y.shape[1:3] != (x.shape[1] * factor, x.shape[2] * factor):
    raise DataError(f"targets {y.shape} are not the inputs {x.shape} upsampled by {factor}")
  module = Regressor(factor, tuple(config.features))
  k_init, k_data = jax.random.split(jax.random.key(seed))
  params = module.init(k_init, jnp.zeros((1, *x.shape[1:])))["params"]
  state = loop.TrainState.create(params, loop.make_optimizer(config).init(params))
  data = (jnp.asarray(x), jnp.asarray(y))

  def call(state, n):  # One jitted step at a time; metrics of the call's last step.
    for _ in range(n):
      state, metrics = _train_step(state, data, k_data, module=module, config=config)
    return state, metrics

  state, history = loop.train_in_memory(
    "superres_regressor", state, call, steps=config.steps, steps_per_call=config.steps_per_call
  )
  return TrainedRegressor(module, state.params, history)


def evaluate_baselines(
  paired_inputs,
  paired_targets,
  test_inputs,
  test_targets,
  factor: int,
  net,
  *,
  config: ml_collections.ConfigDict | None = None,
  seed: int = 0,
) -> dict[str, dict[str, float]]:
  """Trains the regressor on the pairs and scores both baselines on the test pairs:
  {'bicubic': metrics, 'regression': metrics + 'train_seconds'}, from `evaluate_superres`
  (`net` None: pixel metrics only); `config`: the `superres_regressor` section."""
  results = {}
  out = bicubic(test_inputs, factor)
  results["bicubic"] = evaluate_superres(out, test_inputs, test_targets, factor, net)
  t = time.perf_counter()
  model = train_regressor(paired_inputs, paired_targets, factor, config=config, seed=seed)
  elapsed = time.perf_counter() - t
  out = model.predict(test_inputs)
  results["regression"] = evaluate_superres(out, test_inputs, test_targets, factor, net)
  results["regression"]["train_seconds"] = elapsed
  return {k: {m: float(v) for m, v in d.items()} for k, d in results.items()}
