"""Streaming input: TFDS images decoded on access, and stage 1's batches through grain.

With `data.streaming`, a TFDS split's images stay on disk. `LazyImages` stands in for the
split's (N, H, W, C) uint8 array: indexing it reads and decodes only the rows asked for,
`take` makes a view of some rows without reading any, and `np.asarray` reads them all.
Its pixels are those `sources` gives when it reads the split whole, bit for bit: each
image is centre-cropped the same way and resized in a call of the same shape as the call
that resized it there (`sources.READ_CHUNK` records read at a time, resized
`sources.RESIZE_CHUNK` at a time), the rest of the call padded with zeros. The shape
matters, as XLA may compile another algorithm for another batch shape (on CPU it does for
calls of one or two small images); the other rows of a call do not. The price: a read
of a few rows resizes at least one call's worth of images (up to `RESIZE_CHUNK`), little
on an accelerator, noticeable on CPU.

`stage1_batches` yields stage 1's batches, step by step: the rows of
`stage1.batch_indices` for each step, decoded ahead by grain in threads (and in worker
processes with `data.workers`), so a streaming run draws the same examples as an
in-memory one. `StepBatches` is the `batch_fn` that `stage1.train` hands the training
loop with `data.streaming`.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator

import numpy as np

from lsdm_jax.data import sources
from lsdm_jax.errors import ConfigError, DataError


def _image(record) -> np.ndarray:
  """A record's image as (H, W, C)."""
  image = np.asarray(record["image"])
  return image[..., None] if image.ndim == 2 else image


def resize_call_sizes(rows: np.ndarray, n: int) -> np.ndarray:
  """Rows of the resize call that resizes each split row when `sources` reads a split of
  `n` records whole (`READ_CHUNK`-record reads, each resized `RESIZE_CHUNK` at a time)."""
  rows = np.asarray(rows, np.int64)
  read_start = rows // sources.READ_CHUNK * sources.READ_CHUNK
  read_len = np.minimum(sources.READ_CHUNK, n - read_start)
  call_start = (rows - read_start) // sources.RESIZE_CHUNK * sources.RESIZE_CHUNK
  return np.minimum(sources.RESIZE_CHUNK, read_len - call_start)


class LazyImages:
  """A TFDS split's images as a read-only (N, H, W, C) uint8 array, decoded on access.

  `images[i]` gives one (H, W, C) image; `images[a:b]`, `images[int_array]` and
  `images[bool_mask]` give (K, H, W, C) arrays (an int array of any shape works as in
  numpy); only those records are read. `take(rows)` is a view of some rows that reads
  nothing; `np.asarray(images)` (and `sources.to_float(images)`) reads every row.

  Args:
    source: random-access TFDS data source of the split (`tfds.data_source`); its records
      hold an `image`. It travels to grain's worker processes, so it must be picklable.
    image_size: if > 0, centre-crop to a square and resize to this size.
    what: how errors name the data set, e.g. "TFDS 'celeb_a'".

  Raises:
    DataError: the images are not uint8.
  """

  def __init__(self, source, image_size: int = 0, *, what: str = "TFDS data"):
    self._source = source
    self._size = int(image_size)
    self._split_size = len(source)
    self._rows = np.arange(self._split_size)
    first = _image(source[0])
    if first.dtype != np.uint8:
      raise DataError(f"{what} images have dtype {first.dtype}; expected uint8 images")
    h, w, c = first.shape
    if self._size:
      _, _, s = sources.centre_square(h, w)
      self._decoded_shape = (s, s, c)
      self._image_shape = (self._size, self._size, c)
    else:
      self._decoded_shape = self._image_shape = (h, w, c)

  # ------------------------------------------------------------------ array-like

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self), *self._image_shape)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.uint8)

  @property
  def ndim(self) -> int:
    return 4

  @property
  def rows(self) -> np.ndarray:
    """The split rows (record indices of the TFDS split) this view holds, in order."""
    return self._rows.copy()

  def __repr__(self) -> str:
    return f"LazyImages(shape={self.shape}, dtype=uint8, split of {self._split_size})"

  def __getitem__(self, key) -> np.ndarray:
    rest = ()
    if isinstance(key, tuple):
      key, rest = (key[0], key[1:]) if key else (slice(None), ())
      if key is Ellipsis:
        key, rest = slice(None), (Ellipsis, *rest)
    positions, lead = self._positions(key)
    out = self.finish(self.decode(positions))
    if lead is None:
      return out[0][rest] if rest else out[0]
    out = out.reshape(*lead, *self._image_shape)
    return out[(slice(None),) * len(lead) + rest] if rest else out

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """Reads every row (READ_CHUNK at a time, so only the output is held whole)."""
    del copy  # The result is always a new array.
    out = np.empty(self.shape, np.uint8)
    for start in range(0, len(self), sources.READ_CHUNK):
      positions = np.arange(start, min(len(self), start + sources.READ_CHUNK))
      out[positions] = self.finish(self.decode(positions))
    return out if dtype is None else out.astype(dtype, copy=False)

  def take(self, rows) -> LazyImages:
    """A view of rows `rows` (any row key but a single int) of this one; reads nothing."""
    positions, lead = self._positions(rows)
    if lead is None or len(lead) != 1:
      raise IndexError("take() needs a slice or a 1-D int or bool array of rows")
    view = copy.copy(self)
    view._rows = self._rows[positions]
    return view

  def _positions(self, key) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """A row key → (flat positions in this view, leading shape of the result, None for
    a single int)."""
    n = len(self)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
      if not -n <= key < n:
        raise IndexError(f"index {key} is out of bounds for {n} images")
      return np.asarray([key % n], np.int64), None
    if isinstance(key, slice):
      positions = np.arange(n)[key]
      return positions, positions.shape
    index = np.asarray(key)
    if index.dtype == np.bool_:
      if index.shape != (n,):
        raise IndexError(f"boolean index of shape {index.shape} for {n} images")
      positions = np.flatnonzero(index)
      return positions, positions.shape
    if index.size == 0:
      index = index.astype(np.int64)
    if not np.issubdtype(index.dtype, np.integer):
      raise IndexError(f"images take int, slice, or int or bool array indices, not {key!r}")
    if index.size and (index.min() < -n or index.max() >= n):
      raise IndexError(f"index out of bounds for {n} images")
    positions = np.where(index < 0, index + n, index).astype(np.int64)
    return positions.reshape(-1), index.shape

  # ------------------------------------------------------------------ decoding

  def decode(self, positions) -> tuple[np.ndarray, np.ndarray]:
    """Reads and decodes rows `positions` of this view (numpy only, no JAX: grain's
    worker processes run it).

    Returns:
      (split rows, pixels): the pixels (K, H', W', C) uint8, centre-cropped to a square
      when resizing, not yet resized (`finish` does).
    """
    rows = self._rows[np.asarray(positions, np.int64).reshape(-1)]
    if len(rows) == 0:
      return rows, np.empty((0, *self._decoded_shape), np.uint8)
    images = np.stack([_image(self._source[int(i)]) for i in rows])
    if self._size:
      top, left, s = sources.centre_square(*images.shape[1:3])
      images = np.ascontiguousarray(images[:, top : top + s, left : left + s])
    return rows, images

  def finish(self, decoded: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`decode`'s output → the (K, H, W, C) uint8 images (resized when `image_size`)."""
    rows, pixels = decoded
    if not self._size:
      return pixels
    c = pixels.shape[-1]
    out = np.empty((len(rows), self._size, self._size, c), np.uint8)
    resize = sources._resize_fn(self._size, c)
    calls = resize_call_sizes(rows, self._split_size)
    for b in np.unique(calls).tolist():
      (where,) = np.nonzero(calls == b)
      for start in range(0, len(where), b):
        part = where[start : start + b]
        chunk = np.zeros((b, *pixels.shape[1:]), np.float32)
        chunk[: len(part)] = pixels[part]
        out[part] = sources.resized_uint8(np.asarray(resize(chunk))[: len(part)])
    return out


def take(images, rows):
  """`images[rows]` for an array; a view reading nothing for `LazyImages`."""
  if isinstance(images, LazyImages):
    return images.take(rows)
  return images[rows]


# --------------------------------------------------------------------------- grain


class _ReadStep:
  """step → the step's rows of `images`, read (and, when lazy, decoded but not resized)."""

  def __init__(self, images, batch_size: int, seed: int, rows):
    self.images, self.batch_size, self.seed = images, batch_size, seed
    self.rows = slice(None) if rows is None else np.asarray(rows, np.int64)

  def __call__(self, step: int):
    from lsdm_jax.stage1 import batch_indices  # stage1 imports this module.

    idx = batch_indices(len(self.images), self.batch_size, self.seed, int(step))[self.rows]
    if isinstance(self.images, LazyImages):
      return self.images.decode(idx)
    return idx, np.asarray(self.images[idx])


class _FinishStep:
  """`_ReadStep`'s output → the float32 batch (resizing here, in the main process)."""

  def __init__(self, images):
    self.images = images

  def __call__(self, decoded) -> np.ndarray:
    if isinstance(self.images, LazyImages):
      return sources.to_float(self.images.finish(decoded))
    return sources.to_float(decoded[1])


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
) -> Iterator[np.ndarray]:
  """Stage 1's host batches for steps `start_step`, ..., `num_steps` − 1, through grain.

  The batch of step s is `to_float(images[stage1.batch_indices(len(images), batch_size,
  seed, s)[rows]])`, exactly what `stage1.train` computes without streaming.

  Args:
    images: (N, H, W, C) images, a `LazyImages` or an array.
    batch_size: rows of the global batch.
    seed: the data order's seed.
    rows: the rows of each global batch this process loads (`parallel.process_rows`);
      None: all of them.
    start_step, num_steps: the steps to yield.
    workers: grain worker processes reading and decoding the records (0 = none: threads
      of this process). Resizing stays in this process, on JAX's default device, as when
      the split is read whole.
    prefetch: batches read ahead, each by a thread of its own, in this process and in
      each worker (0 = none: each batch is read when it is asked for).

  Returns:
    A grain iterator of (K, H, W, C) float32 batches; `close()` it to stop its threads
    and workers early.
  """
  import grain  # Only streaming runs need it.

  read, finish = _ReadStep(images, batch_size, seed, rows), _FinishStep(images)
  options = grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
  dataset = grain.MapDataset.range(start_step, num_steps).map(read)
  if workers == 0:
    return iter(dataset.map(finish).to_iter_dataset(options))
  from absl import flags

  if not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags of grain's own; outside an absl app (tests,
    # notebooks) nothing parsed them, so their defaults stand.
    flags.FLAGS.mark_as_parsed()
  stream = dataset.to_iter_dataset(options).mp_prefetch(
    grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch))
  )
  stream = stream.map(finish)
  if prefetch:
    stream = grain.experimental.ThreadPrefetchIterDataset(stream, prefetch_buffer_size=prefetch)
  return iter(stream)


class StepBatches:
  """A `batch_fn` for `loop.run`: step → that step's host batch, from `stage1_batches`.

  The loop asks for consecutive steps from the one it starts (or resumes) at; a call for
  any other step starts the grain iterator afresh at that step. The iterator is closed
  after the last step (`num_steps` − 1), by `close`, or when this object is collected.
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
  ):
    self._args = (images, batch_size, seed, rows)
    self._num_steps, self._workers, self._prefetch = num_steps, workers, prefetch
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
        workers=self._workers,
        prefetch=self._prefetch,
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
  """Checks `data.streaming`, `data.workers`, `data.prefetch` and `data.attributes`
  (called by `config.validate`)."""
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
