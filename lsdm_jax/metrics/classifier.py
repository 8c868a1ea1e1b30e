"""The domain feature net: a small CNN classifier whose penultimate layer embeds images.

Offline there is no Inception network for MNIST-like data, so Fréchet distance, precision,
recall and diversity are measured in the features of this classifier, trained once on the
*train* split of a data set and cached with Orbax under `cache_dir()/"classifier"/<key>`.
For the attributes task the same net is trained as K binary classifiers (one sigmoid
logit per attribute) on the train split's attribute vectors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import pathlib
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from lsdm_jax.data.sources import Dataset, cache_dir
from lsdm_jax.errors import DataError

# Bump when the architecture or the training recipe changes: old caches are then ignored.
CLASSIFIER_VERSION = "v1"
FEATURE_DIM = 128
EVAL_BATCH = 500


class ClassifierCNN(nn.Module):
  """Three 3x3 convolutions (two of stride 2), a `feature_dim` layer and `num_classes` logits.

  Strided convolutions rather than max-pooling: on CPU the pooling backward pass costs
  more than the convolutions themselves. Works for any (H, W, C) input.
  """

  num_classes: int
  feature_dim: int = FEATURE_DIM

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Maps images to (logits, features).

    Args:
      images: (N, H, W, C) float32 in [0, 1].

    Returns:
      logits (N, num_classes) and penultimate features (N, feature_dim), both float32.
    """
    h = images * 2.0 - 1.0
    h = nn.relu(nn.Conv(32, (3, 3), strides=2)(h))
    h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h))
    h = nn.relu(nn.Conv(64, (3, 3))(h))
    feats = nn.relu(nn.Dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
    logits = nn.Dense(self.num_classes)(feats)
    return logits, feats


# --------------------------------------------------------------------------- FeatureNet


@functools.cache
def _apply_fn(num_classes: int, feature_dim: int) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """One jitted forward pass per architecture, shared by every FeatureNet."""
  module = ClassifierCNN(num_classes, feature_dim)

  @jax.jit
  def apply(params, images):
    return module.apply({"params": params}, images)

  return apply


@dataclasses.dataclass(frozen=True)
class FeatureNet:
  """A trained classifier used as a feature extractor.

  Attributes:
    params: the Flax parameters of `ClassifierCNN`.
    image_shape: (H, W, C) the net was trained on.
    num_classes: number of classes K.
    feature_dim: width of the penultimate feature vector.
  """

  params: Any
  image_shape: tuple[int, int, int]
  num_classes: int
  feature_dim: int = FEATURE_DIM

  def _run(self, images: np.ndarray | jax.Array, batch_size: int) -> tuple[np.ndarray, ...]:
    images = _as_float_nhwc(images, self.image_shape)
    apply = _apply_fn(self.num_classes, self.feature_dim)
    n = len(images)
    logits, feats = [], []
    for start in range(0, n, batch_size):
      batch = images[start : start + batch_size]
      pad = batch_size - len(batch)
      if pad:  # A fixed batch shape compiles once.
        batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
      lo, fe = apply(self.params, batch)
      logits.append(np.asarray(lo)[: batch_size - pad])
      feats.append(np.asarray(fe)[: batch_size - pad])
    if not logits:
      return (
        np.zeros((0, self.num_classes), np.float32),
        np.zeros((0, self.feature_dim), np.float32),
      )
    return np.concatenate(logits), np.concatenate(feats)

  def logits(self, images: np.ndarray | jax.Array, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """(N, H, W, C) float32 [0, 1] or uint8 images → (N, K) float32 logits."""
    return self._run(images, batch_size)[0]

  def features(self, images: np.ndarray | jax.Array, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """(N, H, W, C) float32 [0, 1] or uint8 images → (N, feature_dim) float32 features."""
    return self._run(images, batch_size)[1]

  def predict(self, images: np.ndarray | jax.Array, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """(N, H, W, C) float32 [0, 1] or uint8 images → (N,) int32 predicted classes."""
    return self.logits(images, batch_size).argmax(axis=-1).astype(np.int32)

  def logits_and_features(
    self, images: np.ndarray | jax.Array, batch_size: int = EVAL_BATCH
  ) -> tuple[np.ndarray, np.ndarray]:
    """Both outputs from one pass: (N, K) logits and (N, feature_dim) features."""
    return self._run(images, batch_size)


def _as_float_nhwc(images: np.ndarray | jax.Array, image_shape: tuple[int, ...]) -> np.ndarray:
  """Checks the shape and converts uint8 [0, 255] or float [0, 1] to float32 [0, 1]."""
  images = np.asarray(images)
  if images.ndim == 3 and image_shape[-1] == 1:
    images = images[..., None]
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
    raise DataError(
      f"images have shape {images.shape} but the feature net expects (N, {image_shape}); "
      "evaluate images of the data set the net was trained on, NHWC"
    )
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f"images have dtype {images.dtype}; pass uint8 or float32 in [0, 1]")
  return images.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- training


def _shift_augment(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Random integer translations of up to ±max_shift pixels, zero (black) filled."""
  if max_shift == 0:
    return images
  _, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def train_classifier(
  images: np.ndarray,
  labels: np.ndarray,
  num_classes: int,
  *,
  seed: int = 0,
  steps: int = 1500,
  batch_size: int = 64,
  learning_rate: float = 2e-3,
  max_shift: int = 2,
) -> FeatureNet:
  """Trains `ClassifierCNN` with Adam (cosine decay) and random ±`max_shift` px shifts.

  Args:
    images: (N, H, W, C) uint8 or float32 in [0, 1] training images.
    labels: (N,) int labels in [0, num_classes), or (N, K) binary attributes in {0, 1}
      (then one sigmoid cross-entropy per attribute).
    num_classes: K.
    seed: seeds initialisation, batch order and augmentation.
    steps: optimisation steps.
    batch_size: examples per step.
    learning_rate: peak Adam learning rate.
    max_shift: augmentation translation range in pixels (0 disables it).

  Returns:
    The trained `FeatureNet`.
  """
  labels = np.asarray(labels)
  multilabel = labels.shape == (len(images), num_classes) and labels.ndim == 2
  if images.ndim != 4 or not (multilabel or labels.shape == (len(images),)):
    raise DataError(
      f"classifier training needs (N, H, W, C) images and (N,) labels or (N, K) attributes, "
      f"got {images.shape} and {labels.shape}"
    )
  if not multilabel and num_classes < 2 or labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(
      f"classifier training needs labels in [0, {num_classes}) with at least 2 classes; "
      "use a labelled data set"
    )
  x = jnp.asarray(_as_float_nhwc(images, images.shape[1:]))
  y = jnp.asarray(labels, jnp.float32 if multilabel else jnp.int32)
  module = ClassifierCNN(num_classes)
  key = jax.random.key(seed)
  params = module.init(key, x[:1])["params"]
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.02))
  opt_state = tx.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, step):
    step_key = jax.random.fold_in(key, step)
    batch_key, aug_key = jax.random.split(step_key)
    idx = jax.random.randint(batch_key, (batch_size,), 0, x.shape[0])
    batch = _shift_augment(aug_key, x[idx], max_shift)

    def loss_fn(p):
      logits, _ = module.apply({"params": p}, batch)
      if multilabel:
        return optax.sigmoid_binary_cross_entropy(logits, y[idx]).sum(-1).mean()
      return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  loss = jnp.zeros(())
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, step)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"classifier training diverged (loss {float(loss)})")
  return FeatureNet(params, tuple(int(d) for d in images.shape[1:]), num_classes)


# --------------------------------------------------------------------------- cache


def cache_key(dataset: Dataset, attributes: bool = False) -> str:
  """`<source>-<H>x<W>x<C>-k<K>-<version>-<fingerprint of the train split>` (`-attr` after
  K for an attribute classifier).

  The fingerprint makes an `npz:` file that changed under the same path miss the cache.
  """
  name = re.sub(r"[^A-Za-z0-9_.]+", "_", dataset.name).strip("_")[:60] or "data"
  h, w, c = dataset.image_shape
  digest = hashlib.sha256()
  digest.update(np.ascontiguousarray(dataset.train_images).tobytes())
  targets, k = _targets(dataset, attributes)
  digest.update(np.ascontiguousarray(targets).tobytes())
  if attributes:
    digest.update(",".join(dataset.attribute_names).encode())
  kind = f"k{k}-attr" if attributes else f"k{k}"
  return f"{name}-{h}x{w}x{c}-{kind}-{CLASSIFIER_VERSION}-{digest.hexdigest()[:12]}"


def _targets(dataset: Dataset, attributes: bool) -> tuple[np.ndarray, int]:
  if attributes:
    return dataset.train_attributes, len(dataset.attribute_names)
  return dataset.train_labels, dataset.num_classes


def load_or_train_classifier(
  dataset: Dataset,
  cache_root: str | os.PathLike | None = None,
  *,
  attributes: bool = False,
  **train_kwargs,
) -> FeatureNet:
  """Restores the data set's feature net from the cache, or trains and caches it.

  The cache lives in `<cache_root or cache_dir()>/classifier/<cache_key(dataset)>`. A file
  lock makes a second process wait for the first one's training instead of repeating it,
  and the checkpoint is renamed into place only when complete. An unreadable cache is
  retrained with a warning.

  Args:
    dataset: a labelled `Dataset`; the net is trained on its train split only.
    attributes: train on the attribute vectors (`dataset.train_attributes`) instead.
    cache_root: overrides `cache_dir()`.
    **train_kwargs: passed to `train_classifier` (a different recipe should use another
      `cache_root`: they are not part of the key).

  Returns:
    The `FeatureNet`.
  """
  if attributes and dataset.train_attributes is None:
    raise DataError(
      f"data set {dataset.name!r} has no attributes loaded; set data.attributes to train "
      "an attribute classifier"
    )
  if not attributes and (dataset.train_labels is None or dataset.num_classes < 2):
    raise DataError(
      f"data set {dataset.name!r} has no labels, so no feature net can be trained; "
      "evaluate on a labelled source (mnist5k, tfds:mnist, an npz with 'labels')"
    )
  root = pathlib.Path(cache_root) if cache_root is not None else cache_dir()
  path = root / "classifier" / cache_key(dataset, attributes)
  path.parent.mkdir(parents=True, exist_ok=True)
  targets, k = _targets(dataset, attributes)
  abstract = _abstract_params(dataset.image_shape, k)
  with _file_lock(path.with_name(path.name + ".lock")):
    if path.exists():
      try:
        params = _restore(path, abstract)
        return FeatureNet(params, dataset.image_shape, k)
      except Exception as e:  # noqa: BLE001 - any unreadable cache is simply retrained.
        warnings.warn(
          f"feature-net cache {path} is unreadable ({type(e).__name__}: {e}); retraining",
          RuntimeWarning,
          stacklevel=2,
        )
    net = train_classifier(np.asarray(dataset.train_images), targets, k, **train_kwargs)
    _save_atomically(path, net.params)
  return net


def _abstract_params(image_shape: tuple[int, ...], num_classes: int) -> Any:
  module = ClassifierCNN(num_classes)
  shapes = jax.eval_shape(
    lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32))
  )
  return shapes["params"]


def _local_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer private to this process.

  The feature net is a per-process cache (in a multi-host run only process 0
  evaluates), so its reads and writes must not wait at Orbax's cross-process barriers.
  """
  me = jax.process_index()
  return ocp.StandardCheckpointer(
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"local{me}"
    )
  )


def _restore(path: pathlib.Path, abstract: Any) -> Any:
  with _local_checkpointer() as ckptr:
    params = ckptr.restore(path.resolve(), abstract)
  shapes_ok = jax.tree.map(lambda a, b: a.shape == b.shape, params, abstract)
  finite = jax.tree.map(lambda a: bool(jnp.all(jnp.isfinite(a))), params)
  if not (all(jax.tree.leaves(shapes_ok)) and all(jax.tree.leaves(finite))):
    raise ValueError("restored parameters have the wrong shapes or non-finite values")
  return params


def _save_atomically(path: pathlib.Path, params: Any) -> None:
  """Writes a private copy with Orbax, then renames it into place (or drops a corrupt one)."""
  staging = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    with _local_checkpointer() as ckptr:
      ckptr.save((staging / "params").resolve(), jax.device_get(params))
    if path.exists():  # A corrupt entry (we hold the lock, so no one else is writing it).
      shutil.rmtree(path, ignore_errors=True)
    try:
      os.rename(staging / "params", path)
    except OSError:
      if not path.exists():  # Not a lost race with a lock-less writer: a real failure.
        raise
  except OSError as e:
    warnings.warn(f"could not cache the feature net at {path} ({e})", RuntimeWarning, stacklevel=3)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(lock_path: pathlib.Path, timeout: float = 900.0) -> Iterator[None]:
  """An exclusive advisory lock (fcntl); a no-op where file locks are unsupported."""
  try:
    import fcntl
  except ImportError:  # pragma: no cover - non-POSIX.
    yield
    return
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:
    yield
    return
  locked = False
  try:
    deadline = time.monotonic() + timeout
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          break  # A stuck holder: go on without the lock; the rename stays atomic.
        time.sleep(0.2)
      except OSError:
        break  # Filesystem without flock support.
    yield
  finally:
    if locked:
      fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
