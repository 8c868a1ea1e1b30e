"""What the baselines share: settings, paired training sets held on the device (batches drawn
there with replacement from `fold_in(key, step)`), and label-conditional generators.
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
  name: str,
  section: ml_collections.ConfigDict | None,
  check: Callable[[ml_collections.ConfigDict], None] | None = None,
) -> ml_collections.FrozenConfigDict:
  """Baseline section `name` (None: the defaults), checked and frozen (hashable, so a static
  argument of the jitted steps).

  The checks: the schema's types and ranges (`config.check_section`), the optimiser's
  schedule, and the baseline's own rules (`check`, e.g. `latent_diffusion.check_config`).
  """
  section = config_lib.base_config()[name] if section is None else section
  config_lib.check_section(name, section)
  loop.check_optimizer(section, name)
  if check is not None:
    check(section)
  return ml_collections.FrozenConfigDict(section)


def without_length(config: ml_collections.FrozenConfigDict) -> ml_collections.FrozenConfigDict:
  """`config` without `steps` and `steps_per_call`, so that runs differing only in length
  share a compilation."""
  return ml_collections.FrozenConfigDict(
    {k: v for k, v in config.items() if k not in ("steps", "steps_per_call")}
  )


def check_paired(x, y, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Labels x (N,) in [0, num_classes) and images y (N, H, W, C) (uint8 or float in [0, 1])
  as (int32, float32); DataError if they are not."""
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
  """Labels x ((B,) or a scalar), each repeated n times, as int32 (B·n,); DataError for
  labels outside [0, num_classes), which an embedding lookup would silently clip."""
  x = np.atleast_1d(np.asarray(x))
  if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
    raise DataError(f"labels must be integers of shape (B,); got {x.dtype} of shape {x.shape}")
  if x.size and (x.min() < 0 or x.max() >= num_classes):
    raise DataError(f"labels must lie in [0, {num_classes}); got [{x.min()}, {x.max()}]")
  x = x.astype(np.int32)
  return x if n is None else np.repeat(x, n)


def place(state, x: np.ndarray, y: np.ndarray, batch_size: int, mesh):
  """(state, (x, y) on the device(s), the batches' sharding or None). With a mesh, state and
  data are replicated and batches split over its 'data' axis."""
  data = (jnp.asarray(x), jnp.asarray(y))
  if mesh is None:
    return state, data, None
  parallel.check_batch_size(batch_size, mesh, "batch_size")
  state, data = jax.device_put((state, data), parallel.replicated(mesh))
  return state, data, parallel.data_sharding(mesh)


def train_pairs(name: str, section, x, y, init: Callable, call: Callable, *, seed, mesh, **static):
  """Trains baseline `name` on the pairs (x, y): the state is `init(init_key)`, each call
  `call(state, (x, y), run_key, num_steps=n, sharding=..., **static)`, both keys split from
  `seed`; a mesh shards the batches. Returns `loop.train_in_memory`'s (state, history)."""
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
  """A trained label-conditional image generator. `decode(module, params, labels (B,), key)`
  → images (B, H, W, C) in [0, 1], row i's noise from fold_in(key, i)."""

  module: Any
  params: Any
  decode: Callable

  @functools.cached_property
  def generate_fn(self) -> Callable:
    """The jitted `generate(params, x, key)` → images (B, H, W, C) in [0, 1]."""
    return jax.jit(functools.partial(self.decode, self.module))

  def generate(self, x, key: jax.Array, n: int | None = None) -> np.ndarray:
    """(B·n, H, W, C) float32 images on the host for labels x ((B,) or a scalar), each
    repeated `n` times in consecutive rows."""
    x = requested_labels(x, self.module.num_classes, n)
    return np.asarray(self.generate_fn(self.params, jnp.asarray(x), key))
