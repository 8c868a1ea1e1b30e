"""What the baselines share: their settings, their paired training sets on the device, and
the label-conditional image generators of the pixel-space ones.

Each baseline trains on the paired examples alone. The set is small (hundreds of
examples), so it lives on the device and every step draws its batch there, with
replacement, from `fold_in(key, step)`; the training loop is `loop.train_in_memory`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lsdm_jax import config as config_lib
from lsdm_jax import loop, parallel
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError


def settings(
  name: str, section: ml_collections.ConfigDict | None
) -> ml_collections.FrozenConfigDict:
  """Baseline section `name` checked by `config.check_section` (None: the defaults), frozen:
  hashable, so that the jitted steps take it as a static argument and runs with the same
  settings share a compilation."""
  section = config_lib.base_config()[name] if section is None else section
  config_lib.check_section(name, section)
  return ml_collections.FrozenConfigDict(section)


def without_length(config: ml_collections.FrozenConfigDict) -> ml_collections.FrozenConfigDict:
  """`config` without `steps` and `steps_per_call`, for steps that do not depend on the run's
  length: runs that differ only in length share a compilation."""
  return ml_collections.FrozenConfigDict(
    {k: v for k, v in config.items() if k not in ("steps", "steps_per_call")}
  )


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


def train_pairs(name: str, section, x, y, init: Callable, call: Callable, *, seed, mesh, **static):
  """Trains baseline `name` (settings `section`) on the pairs (x, y), held on the device.

  The state is `init(init_key)`; each jitted call is `call(state, (x, y), run_key,
  num_steps=n, sharding=..., **static)`; both keys are split from `seed`. With a mesh
  (`lsdm_jax.parallel.make_mesh`) the batches are sharded over its 'data' axis.

  Returns:
    (state, history) of `loop.train_in_memory`.
  """
  init_key, run_key = jax.random.split(jax.random.key(seed))
  state, data, sharding = place(init(init_key), x, y, section.batch_size, mesh)
  return loop.train_in_memory(
    name,
    state,
    lambda s, n: call(s, data, run_key, num_steps=n, sharding=sharding, **static),
    steps=section.steps,
    steps_per_call=section.steps_per_call,
  )


def constrain(tree, sharding, lead: int = 0):
  """Splits the batch axis (after `lead` stacking axes) of every leaf over `sharding`'s
  'data' axis; the identity without a sharding."""
  if sharding is None:
    return tree
  spec = jax.sharding.PartitionSpec(*([None] * lead), parallel.DATA)
  return jax.lax.with_sharding_constraint(tree, jax.sharding.NamedSharding(sharding.mesh, spec))


def sample_batch(key: jax.Array, x: jax.Array, y: jax.Array, shape: tuple[int, ...]):
  """Rows drawn with replacement: labels `shape` and images `shape + y.shape[1:]`."""
  idx = jax.random.randint(key, shape, 0, x.shape[0])
  return jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)


@dataclasses.dataclass(frozen=True)
class LabelGenerator:
  """A trained label-conditional image generator: images = decode(noise, labels).

  Attributes:
    module: the network that holds the decoding method.
    params: its parameters.
    decode: (module, params, labels (B,), key) → images (B, H, W, C) in [0, 1], the
      noise of row i drawn from fold_in(key, i) (`sampling.noise_per_row`).
  """

  module: Any
  params: Any
  decode: Callable

  @functools.cached_property
  def generate_fn(self) -> Callable:
    """The jitted `generate(params, x, key) -> images (B, H, W, C) in [0, 1]`: one forward
    pass. An image depends on its key and row, not on how many are generated together."""
    return jax.jit(functools.partial(self.decode, self.module))

  def generate(self, x, key: jax.Array, n: int | None = None) -> np.ndarray:
    """Images for labels x ((B,) or a scalar), each repeated `n` times (consecutive rows).

    Returns:
      (B·n, H, W, C) float32 in [0, 1], on the host.
    """
    x = requested_labels(x, self.module.num_classes, n)
    return np.asarray(self.generate_fn(self.params, jnp.asarray(x), key))
