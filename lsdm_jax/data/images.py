"""Images of TFDS records: decoded, centre-cropped and resized one by one, or on access.

`crop_resize` maps one (H, W, C) uint8 image to a square (size, size, C) uint8 image: the
centre square, resized by a separable, antialiased linear (triangle) filter, as
`jax.image.resize(..., 'linear')` and PIL's bilinear filter define it, in numpy. It is a
function of the image alone, so reading a split whole (`sources`), reading some rows of it
(`LazyImages`) and decoding batches in grain's worker processes (`pipeline`) give the same
pixels, bit for bit, without JAX and without batching images into calls of a fixed shape.

`LazyImages` stands in for a TFDS split's (N, H, W, C) uint8 array: indexing it reads and
decodes only the rows asked for, `take` makes a view of some rows without reading any, and
`np.asarray` reads them all.
"""

from __future__ import annotations

import copy
import functools

import numpy as np

from lsdm_jax.errors import DataError

READ_CHUNK = 1024  # Records read (and held before resizing) at a time.


def record_image(record) -> np.ndarray:
  """A TFDS record's image as (H, W, C)."""
  image = np.asarray(record["image"])
  return image[..., None] if image.ndim == 2 else image


def centre_square(h: int, w: int) -> tuple[int, int, int]:
  """(top, left, side) of the centre square of an h x w image."""
  s = min(h, w)
  return (h - s) // 2, (w - s) // 2, s


@functools.cache
def resize_weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float32 weights of a 1-D linear resize, antialiased when shrinking.

  Output pixel i is centred at input coordinate (i + 0.5) · n_in / n_out − 0.5; its
  weights are a triangle kernel there, widened by n_in / n_out when shrinking (so every
  input pixel counts), cut at the image border and normalised to sum to 1.
  """
  scale = n_out / n_in
  width = max(1.0, 1.0 / scale)
  centres = (np.arange(n_out) + 0.5) / scale - 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None] - centres[:, None]) / width)
  return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.cache
def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """`resize_weights` as taps: (n_out, K) int input indices and (n_out, K) float32
  weights, K the widest kernel's support; unused taps have weight 0."""
  weights = resize_weights(n_in, n_out)
  support = weights > 0
  k = int(support.sum(axis=1).max())
  first = np.argmax(support, axis=1)[:, None] + np.arange(k)[None]
  index = np.minimum(first, n_in - 1)
  taps = np.where(first < n_in, np.take_along_axis(weights, index, axis=1), 0.0)
  return index, taps.astype(np.float32)


def crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops one (H, W, C) uint8 image to a square and resizes it to (size, size, C)."""
  top, left, s = centre_square(*image.shape[:2])
  square = image[top : top + s, left : left + s].astype(np.float32)
  if s == size:
    return np.ascontiguousarray(square.astype(np.uint8))
  index, taps = resize_taps(s, size)
  # Each output pixel reads its few taps, along rows then columns: numpy's own loops, not
  # a dense (size x s) matmul, whose BLAS threads contend with grain's decoding threads
  # and processes (10x slower under load on 2 cores).
  rows = np.einsum("okwc,ok->owc", square[index], taps)
  out = np.einsum("opkc,pk->opc", rows[:, index], taps)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def record_pixels(record, image_size: int = 0, *, what: str = "TFDS data") -> np.ndarray:
  """A record's (H, W, C) uint8 image, cropped and resized to `image_size` when it is > 0.

  Raises:
    DataError: the image is not uint8.
  """
  image = record_image(record)
  if image.dtype != np.uint8:
    raise DataError(f"{what} images have dtype {image.dtype}; expected uint8 images")
  return crop_resize(image, image_size) if image_size else image


def read_images(source, rows, image_size: int = 0, *, what: str = "TFDS data") -> np.ndarray:
  """Records `rows` of `source` as (K, H, W, C) uint8 images (`record_pixels`; numpy
  only: grain's worker processes run it)."""
  rows = np.asarray(rows, np.int64).reshape(-1)
  return np.stack([record_pixels(source[int(i)], image_size, what=what) for i in rows])


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
    self._what = what
    self._split_size = len(source)
    self._rows = np.arange(self._split_size)
    first = record_image(source[0])
    if first.dtype != np.uint8:
      raise DataError(f"{what} images have dtype {first.dtype}; expected uint8 images")
    h, w, c = first.shape
    self._image_shape = (self._size, self._size, c) if self._size else (h, w, c)

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
    out = self.decode(positions)
    if lead is None:
      return out[0][rest] if rest else out[0]
    out = out.reshape(*lead, *self._image_shape)
    return out[(slice(None),) * len(lead) + rest] if rest else out

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """Reads every row (READ_CHUNK at a time)."""
    del copy  # The result is always a new array.
    out = np.empty(self.shape, np.uint8)
    for start in range(0, len(self), READ_CHUNK):
      positions = np.arange(start, min(len(self), start + READ_CHUNK))
      out[positions] = self.decode(positions)
    return out if dtype is None else out.astype(dtype, copy=False)

  def take(self, rows) -> LazyImages:
    """A view of rows `rows` (any row key but a single int) of this one; reads nothing."""
    positions, lead = self._positions(rows)
    if lead is None or len(lead) != 1:
      raise IndexError("take() needs a slice or a 1-D int or bool array of rows")
    view = copy.copy(self)
    view._rows = self._rows[positions]
    return view

  def decode(self, positions) -> np.ndarray:
    """Rows `positions` of this view as (K, H, W, C) uint8 images: read, decoded, and
    cropped and resized when `image_size` > 0."""
    rows = self._rows[np.asarray(positions, np.int64).reshape(-1)]
    if len(rows) == 0:
      return np.empty((0, *self._image_shape), np.uint8)
    return read_images(self._source, rows, self._size, what=self._what)

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


def take(images, rows):
  """`images[rows]` for an array; a view reading nothing for `LazyImages`."""
  if isinstance(images, LazyImages):
    return images.take(rows)
  return images[rows]
