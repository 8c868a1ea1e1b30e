"""Stage 1's input: the order of its examples, and its batches through grain.

`batch_indices` is the data order: the rows of step s's global batch, a pure function of
(seed, step), so a resumed run sees exactly the same batches. With `data.streaming` a TFDS
split's images stay on disk (`images.LazyImages`), and `stage1_batches` yields stage 1's
batches step by step, read and decoded ahead by grain in threads (and in worker processes
with `data.workers`): the same rows as in memory, so a streaming run draws the same
examples as an in-memory one. `StepBatches` is the `batch_fn` that `stage1.train` hands the
training loop with `data.streaming`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator

import numpy as np

from lsdm_jax.data import sources
from lsdm_jax.data.images import LazyImages
from lsdm_jax.errors import ConfigError


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Rows of the global batch at `step`: epochs of seeded permutations, laid end to end.

  A pure function of (seed, step), so a resumed run sees exactly the same batches.
  """
  start = step * batch_size
  out = []
  while len(out) < batch_size:
    epoch, offset = divmod(start + len(out), n)
    perm = _epoch_permutation(n, seed, epoch)
    out.extend(perm[offset : offset + batch_size - len(out)].tolist())
  return np.asarray(out)


# --------------------------------------------------------------------------- grain


class _ReadStep:
  """step → the step's rows of `images`, read and decoded (cropped and resized)."""

  def __init__(self, images, batch_size: int, seed: int, rows):
    self.images, self.batch_size, self.seed = images, batch_size, seed
    self.rows = slice(None) if rows is None else np.asarray(rows, np.int64)

  def __call__(self, step: int) -> np.ndarray:
    idx = batch_indices(len(self.images), self.batch_size, self.seed, int(step))[self.rows]
    if isinstance(self.images, LazyImages):
      return self.images.decode(idx)
    return np.asarray(self.images[idx])


def stage1_batches(
  images,
  batch_size: int,
  seed: int,
  rows: np.ndarray | None = None,
  *,
  start_step: int = 0,
  num_steps: int,
  workers: int = 0,
  prefetch: int = 2,
  to_float: bool = False,
) -> Iterator[np.ndarray]:
  """Stage 1's host batches for steps `start_step`, ..., `num_steps` − 1, through grain.

  The batch of step s is `images[batch_indices(len(images), batch_size, seed, s)[rows]]`,
  exactly what `stage1.train` reads without streaming: uint8 images, decoded, cropped and
  resized in the workers, which cross to the devices as they are and become float there.

  Args:
    images: (N, H, W, C) images, a `LazyImages` or an array.
    batch_size: rows of the global batch.
    seed: the data order's seed.
    rows: the rows of each global batch this process loads (`parallel.process_rows`);
      None: all of them.
    start_step, num_steps: the steps to yield.
    workers: grain worker processes reading, decoding, cropping and resizing the records
      (0 = none: threads of this process).
    prefetch: batches read ahead, each by a thread of its own, in this process and in
      each worker (0 = none: each batch is read when it is asked for).
    to_float: convert each batch to float32 in [0, 1] here, on the host (for the input
      benchmark's comparison); False (stage 1's way) keeps the images' own dtype (uint8
      for TFDS images): a quarter of the bytes to pass from the workers and to the device,
      for a step that converts on the device.

  Returns:
    A grain iterator of (K, H, W, C) batches of the images' dtype (uint8 for TFDS), or
    float32 with `to_float`; `close()` it to stop its threads and workers early.
  """
  import grain  # Only streaming runs need it.

  read = _ReadStep(images, batch_size, seed, rows)
  options = grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
  dataset = grain.MapDataset.range(start_step, num_steps).map(read)
  if workers == 0:
    if to_float:
      dataset = dataset.map(sources.to_float)
    return iter(dataset.to_iter_dataset(options))
  from absl import flags

  if not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags of grain's own; outside an absl app (tests,
    # notebooks) nothing parsed them, so their defaults stand.
    flags.FLAGS.mark_as_parsed()
  stream = dataset.to_iter_dataset(options).mp_prefetch(
    grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch))
  )
  if to_float:
    stream = stream.map(sources.to_float)
  if prefetch:
    stream = grain.experimental.ThreadPrefetchIterDataset(stream, prefetch_buffer_size=prefetch)
  return iter(stream)


class StepBatches:
  """A `batch_fn` for `loop.run`: step → that step's host batch, from `stage1_batches`.

  The loop asks for consecutive steps from the one it starts (or resumes) at; a call for
  any other step starts the grain iterator afresh at that step. The iterator is closed
  after the last step (`num_steps` − 1), by `close`, or when this object is collected.
  The arguments are `stage1_batches`'s.
  """

  def __init__(
    self,
    images,
    batch_size: int,
    seed: int,
    rows: np.ndarray | None,
    num_steps: int,
    *,
    workers: int = 0,
    prefetch: int = 2,
    to_float: bool = False,
  ):
    self._args = (images, batch_size, seed, rows)
    self._num_steps = num_steps
    self._options = {"workers": workers, "prefetch": prefetch, "to_float": to_float}
    self._iterator = None
    self._next = None
    self.restarts = 0  # Iterators started (the first one included).

  def __call__(self, step: int) -> np.ndarray:
    step = int(step)
    if self._iterator is None or step != self._next:
      self.close()
      self._iterator = stage1_batches(
        *self._args,
        start_step=step,
        num_steps=max(self._num_steps, step + 1),
        **self._options,
      )
      self._finalizer = weakref.finalize(self, _close, self._iterator)
      self.restarts += 1
    batch = next(self._iterator)
    self._next = step + 1
    if self._next >= self._num_steps:
      self.close()
    return batch

  def close(self) -> None:
    """Stops the iterator's threads and worker processes (a later call starts anew)."""
    if self._iterator is not None:
      self._finalizer.detach()
      _close(self._iterator)
      self._iterator = None


def _close(iterator) -> None:
  close = getattr(iterator, "close", None)
  if close is not None:
    close()


# --------------------------------------------------------------------------- config


def check_config(c) -> None:
  """Checks the `data` section: `data.streaming`, `data.workers`, `data.prefetch` and
  `data.attributes`, and that only TFDS sources stream or have attributes."""
  d = c.data
  for field in ("workers", "prefetch"):
    if not isinstance(d[field], int) or isinstance(d[field], bool) or d[field] < 0:
      raise ConfigError(f"data.{field}={d[field]!r} must be an integer >= 0")
  if d.workers and not d.streaming:
    raise ConfigError(
      f"data.workers={d.workers} decodes streamed batches: set data.streaming=True, or "
      "data.workers=0"
    )
  names = tuple(d.attributes)
  if any(not isinstance(a, str) or not a for a in names):
    raise ConfigError(
      f"data.attributes={names!r} must be attribute names, e.g. ('Male', 'Smiling')"
    )
  twice = sorted({a for a in names if names.count(a) > 1})
  if twice:
    raise ConfigError(f"data.attributes names {twice} more than once; list each once")
  sources.check_tfds_only(d.source, d.streaming, names)
