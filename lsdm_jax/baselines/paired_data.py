"""Paired (label, image) training sets of the pixel-space baselines: checks and batches.

The pixel-space baselines (`pixel_wgcs`, `cvae`) train on the paired examples alone; the
whole set is small (hundreds of images), so it lives on the device and every step draws
its batch there, with replacement, from `fold_in(key, step)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import DataError


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


def noise_per_row(key: jax.Array, rows: int, dim: int) -> jax.Array:
  """(rows, dim) standard normal, row i from fold_in(key, i): a sample depends on its key
  and row only, not on how many rows are generated together (as `lsdm_jax.sampling`)."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (dim,)))(jnp.arange(rows))
