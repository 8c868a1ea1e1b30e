"""Paired (label, image) training sets of the pixel-space baselines: checks, batches and
the training driver they share.

The pixel-space baselines (`pixel_wgcs`, `cvae`) train on the paired examples alone; the
whole set is small (hundreds of images), so it lives on the device and every step draws
its batch there, with replacement, from `fold_in(key, step)`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax import parallel
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError, NonFiniteError


def check_paired(x, y, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Checks a paired set and returns it as (labels int32 (N,), images float32 (N, H, W, C)).

  Args:
    x: (N,) integer labels in [0, num_classes).
    y: (N, H, W, C) images, uint8 or float in [0, 1].
    num_classes: number of labels.

  Raises:
    DataError: naming the problem and the fix.
  """
  x, y = np.asarray(x), np.asarray(y)
  if num_classes < 1:
    raise DataError(f"num_classes={num_classes}; pass the number of labels (at least 1)")
  if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
    raise DataError(f"x must be (N,) integer labels; got {x.dtype} of shape {x.shape}")
  if y.ndim != 4 or len(y) != len(x) or len(x) == 0:
    raise DataError(f"need y (N, H, W, C) with N = len(x) > 0; got x {x.shape} and y {y.shape}")
  if x.min() < 0 or x.max() >= num_classes:
    raise DataError(f"labels must lie in [0, {num_classes}); got [{x.min()}, {x.max()}]")
  y = to_float(y)
  if not np.all(np.isfinite(y)) or y.min() < 0.0 or y.max() > 1.0:
    raise DataError("images must be finite and in [0, 1] (uint8 images are divided by 255)")
  return x.astype(np.int32), y


def requested_labels(x, num_classes: int, n: int | None = None) -> np.ndarray:
  """Labels to generate for, as int32 (B·n,): x (B,) or a scalar, each repeated n times.

  Raises:
    DataError: for non-integer labels or labels outside [0, num_classes), which an
      embedding lookup would otherwise silently clip.
  """
  x = np.atleast_1d(np.asarray(x))
  if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
    raise DataError(f"labels must be integers of shape (B,); got {x.dtype} of shape {x.shape}")
  if x.size and (x.min() < 0 or x.max() >= num_classes):
    raise DataError(f"labels must lie in [0, {num_classes}); got [{x.min()}, {x.max()}]")
  x = x.astype(np.int32)
  return x if n is None else np.repeat(x, n)


def sample_batch(
  key: jax.Array, x: jax.Array, y: jax.Array, shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
  """Rows drawn with replacement: labels `shape` and images `shape + y.shape[1:]`."""
  idx = jax.random.randint(key, shape, 0, x.shape[0])
  return jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)


def place(state, x: np.ndarray, y: np.ndarray, batch_size: int, mesh):
  """(state, (x, y) on the device(s), the batches' sharding or None without a mesh).

  With a mesh, the state and the (small) data set are replicated and batches are split
  over its 'data' axis, which `batch_size` must divide.
  """
  data = (jnp.asarray(x), jnp.asarray(y))
  if mesh is None:
    return state, data, None
  parallel.check_batch_size(batch_size, mesh, "batch_size")
  state, data = jax.device_put((state, data), parallel.replicated(mesh))
  return state, data, parallel.data_sharding(mesh)


def step_config(config):
  """The config the jitted step sees: the run's length removed, so that runs differing
  only in `steps` share a compilation (steps per call are a static argument of their own)."""
  return dataclasses.replace(config, steps=1, steps_per_call=1)


def train_in_calls(
  call: Callable,
  state,
  *,
  steps: int,
  steps_per_call: int,
  names: Sequence[str],
  what: str,
  fix: str,
):
  """Runs `call(state, n) -> (state, metrics)` until `steps` steps are done.

  Args:
    call: runs n steps in one jitted call; metrics hold an (n,) array per name.
    state: the initial train state.
    steps, steps_per_call: run length and steps per call.
    names: the metrics to record (means over each call's steps).
    what, fix: the model's name and the advice, for the error raised when a recorded
      metric is not finite.

  Returns:
    (state, history): history holds per call `step` (steps done), the `names` and `time`
    (seconds since the start), as numpy arrays.
  """
  history: dict[str, list] = {"step": [], **{k: [] for k in names}, "time": []}
  start = time.perf_counter()
  done = 0
  while done < steps:
    n = min(steps_per_call, steps - done)
    state, metrics = call(state, n)
    # Blocking here also avoids jax 0.10's CPU all-reduce deadlock on back-to-back dispatch.
    means = {k: float(jnp.mean(metrics[k])) for k in names}
    done += n
    if not all(math.isfinite(v) for v in means.values()):
      raise NonFiniteError(f"{what} losses are {means} at step {done}; {fix}")
    history["step"].append(done)
    for k, v in means.items():
      history[k].append(v)
    history["time"].append(time.perf_counter() - start)
  return state, {k: np.asarray(v) for k, v in history.items()}
