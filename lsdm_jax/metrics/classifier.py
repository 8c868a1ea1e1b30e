"""The domain feature net: a small CNN classifier whose penultimate layer embeds images.

Offline there is no Inception network for MNIST-like data, so Fréchet distance, precision,
recall and diversity are measured in the features of this classifier, trained on the
*train* split of a data set. For `mnist5k` the net is trained once
(`python -m experiments.train_eval_net`) and shipped with the package as a checksummed
file, so every machine and JAX version scores with the same weights; any other data set's
net is trained on the machine and cached with Orbax under `cache_dir()/"classifier"/<key>`.
For the attributes task the same net is trained as K binary classifiers (one sigmoid
logit per attribute) on the train split's attribute vectors.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import os
import pathlib
import re
import warnings
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from lsdm_jax.data.sources import Dataset, cache_dir
from lsdm_jax.errors import DataError
from lsdm_jax.metrics import net_cache, params_file

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
  key = jax.random.key(seed)
  params = ClassifierCNN(num_classes).init(key, x[:1])["params"]
  tx, train_step = _train_step_fn(
    num_classes, multilabel, steps, batch_size, learning_rate, max_shift
  )
  opt_state = tx.init(params)
  loss = jnp.zeros(())
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, x, y, key, step)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"classifier training diverged (loss {float(loss)})")
  return FeatureNet(params, tuple(int(d) for d in images.shape[1:]), num_classes)


@functools.cache
def _train_step_fn(
  num_classes: int,
  multilabel: bool,
  steps: int,
  batch_size: int,
  learning_rate: float,
  max_shift: int,
) -> tuple[optax.GradientTransformation, Callable[..., Any]]:
  """The optimiser and one jitted step per recipe, shared by every training in the process.

  The data and the key are arguments rather than closed-over constants, so two trainings of
  the same recipe on equally many images (CAS on generated and on real images) compile once.
  """
  module = ClassifierCNN(num_classes)
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.02))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, x, y, key, step):
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

  return tx, train_step


# --------------------------------------------------------------------------- cache


def cache_key(dataset: Dataset, attributes: bool = False) -> str:
  """`<source>-<H>x<W>x<C>-k<K>-<version>-<fingerprint of the train split>` (`-attr` after
  K for an attribute classifier).

  The fingerprint makes an `npz:` file that changed under the same path miss the cache.
  """
  name = re.sub(r"[^A-Za-z0-9_.]+", "_", dataset.name).strip("_")[:60] or "data"
  h, w, c = dataset.image_shape
  _, k = _targets(dataset, attributes)
  kind = f"k{k}-attr" if attributes else f"k{k}"
  fingerprint = train_fingerprint(dataset, attributes)
  return f"{name}-{h}x{w}x{c}-{kind}-{CLASSIFIER_VERSION}-{fingerprint[:12]}"


def train_fingerprint(dataset: Dataset, attributes: bool = False) -> str:
  """sha256 (hex) of the train split's images and targets: what a feature net learnt from.

  Images held in memory are hashed; a streamed split (`LazyImages`) whose source names its
  data is identified by `Dataset.split_fingerprint` instead, so no run decodes it to look
  up its cache.
  """
  digest = hashlib.sha256()
  named = dataset.split_fingerprint("train")
  if named and not isinstance(dataset.train_images, np.ndarray):
    digest.update(named.encode())
  else:
    digest.update(np.ascontiguousarray(dataset.train_images).tobytes())
  targets, _ = _targets(dataset, attributes)
  digest.update(np.ascontiguousarray(targets).tobytes())
  if attributes:
    digest.update(",".join(dataset.attribute_names).encode())
  return digest.hexdigest()


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
  """The data set's shipped feature net, or one restored from the cache, or trained and cached.

  A data set with a net in `SHIPPED_NETS` (the same name, image shape, classes and train
  split, and the default recipe) gets that net, checked against its sha256: no training and
  no cache, so every machine and JAX version scores with the same weights. Any other data
  set's net is trained here on its train split and cached in
  `<cache_root or cache_dir()>/classifier/<cache_key(dataset)>`. A file lock makes a second
  process wait for the first one's training instead of repeating it, and the checkpoint is
  renamed into place only when complete. An unreadable cache is retrained with a warning.

  Args:
    dataset: a labelled `Dataset`; the net is trained on its train split only.
    attributes: train on the attribute vectors (`dataset.train_attributes`) instead.
    cache_root: overrides `cache_dir()`.
    **train_kwargs: passed to `train_classifier`; a recipe other than the shipped net's
      trains (a different recipe should use another `cache_root`: they are not part of
      the cache key).

  Returns:
    The `FeatureNet`.

  Raises:
    DataError: the data set has no labels (or attributes), or its shipped net's file is
      damaged or missing.
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
  shipped = shipped_net_for(dataset, attributes=attributes, **train_kwargs)
  if shipped is not None:
    return read_eval_net(ASSETS_DIR / shipped.filename, sha256=shipped.sha256)[0]
  root = pathlib.Path(cache_root) if cache_root is not None else cache_dir()
  path = root / "classifier" / cache_key(dataset, attributes)
  path.parent.mkdir(parents=True, exist_ok=True)
  targets, k = _targets(dataset, attributes)
  abstract = _abstract_params(dataset.image_shape, k)
  with net_cache.file_lock(path.with_name(path.name + ".lock")):
    if path.exists():
      try:
        params = net_cache.restore_params(path, abstract)
        return FeatureNet(params, dataset.image_shape, k)
      except Exception as e:  # noqa: BLE001 - any unreadable cache is simply retrained.
        warnings.warn(
          f"feature-net cache {path} is unreadable ({type(e).__name__}: {e}); retraining",
          RuntimeWarning,
          stacklevel=2,
        )
    net = train_classifier(np.asarray(dataset.train_images), targets, k, **train_kwargs)
    net_cache.save_params_atomically(path, net.params)
  return net


# --------------------------------------------------------------------------- shipped nets

# Where the shipped nets live inside the package (pyproject's package-data ships them).
ASSETS_DIR = pathlib.Path(__file__).parent / "assets"
ASSET_FORMAT = 1
_ASSET_FIX = (
  "reinstall lsdm-jax (or `git checkout` the file in a checkout); if you retrained it on "
  "purpose, record the sha256 that `python -m experiments.train_eval_net` printed in SHIPPED_NETS"
)


@dataclasses.dataclass(frozen=True)
class ShippedNet:
  """A feature net trained once by `experiments/train_eval_net.py` and shipped as a file.

  Attributes:
    source: the name of the data set it was trained on (`Dataset.name`).
    image_shape: (H, W, C).
    num_classes: K.
    train_fingerprint: `train_fingerprint(dataset)` of the train split it was trained on.
    recipe: the `train_classifier` keyword arguments it was trained with.
    filename: the .npz in `ASSETS_DIR`.
    sha256: the file's sha256 (hex).
  """

  source: str
  image_shape: tuple[int, int, int]
  num_classes: int
  train_fingerprint: str
  recipe: dict[str, Any]
  filename: str
  sha256: str


# Written by `python -m experiments.train_eval_net` (jax 0.10.2, float16 storage: the same
# predictions as float32 on all 5,000 images, half the size); 98.6% on the test split.
SHIPPED_NETS: tuple[ShippedNet, ...] = (
  ShippedNet(
    source="mnist5k",
    image_shape=(28, 28, 1),
    num_classes=10,
    train_fingerprint="a20311dfb7dfa93680e72e1ae837e5ec29636f60dd0dd7842d4e2015d5b112b4",
    recipe={"seed": 0, "steps": 1500, "batch_size": 64, "learning_rate": 0.002, "max_shift": 2},
    filename="mnist5k_eval_net_v1.npz",
    sha256="e5d2e80faaa26317bbaf3995b38fd0962e344a194b00f4f669b8944f16ccd211",
  ),
)


# Read once at import, so that it stays the recipe while a test replaces `train_classifier`.
_RECIPE = {
  name: p.default
  for name, p in inspect.signature(train_classifier).parameters.items()
  if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def default_recipe() -> dict[str, Any]:
  """`train_classifier`'s keyword defaults: the recipe of cached and shipped nets."""
  return dict(_RECIPE)


def shipped_net_for(
  dataset: Dataset, *, attributes: bool = False, **train_kwargs
) -> ShippedNet | None:
  """The shipped net of exactly this data set's train split and this recipe, or None.

  A data set of the same name whose images or labels differ (an `npz:` file of other
  digits, a changed embedded set) gets none, and neither does a different recipe.
  """
  if attributes:
    return None
  recipe = {**default_recipe(), **train_kwargs}
  for entry in SHIPPED_NETS:
    if (
      entry.source == dataset.name
      and entry.image_shape == tuple(dataset.image_shape)
      and entry.num_classes == dataset.num_classes
      and entry.recipe == recipe
      and entry.train_fingerprint == train_fingerprint(dataset)
    ):
      return entry
  return None


def export_eval_net(
  dataset: Dataset, path: str | os.PathLike, *, dtype: str = "float32", **train_kwargs
) -> dict[str, Any]:
  """Trains the data set's feature net on its train split and writes it as a shipped asset.

  Args:
    dataset: a labelled `Dataset`.
    path: the .npz to write (its parent directory must exist).
    dtype: "float32" or "float16", the stored parameters' type (loaded as float32).
    **train_kwargs: overrides of `default_recipe()`.

  Returns:
    The asset's metadata (source, image shape, classes, version, recipe, train fingerprint,
    versions it was trained with) plus `sha256`, the file's checksum to record in
    `SHIPPED_NETS`.
  """
  if dataset.train_labels is None or dataset.num_classes < 2:
    raise DataError(f"data set {dataset.name!r} has no labels; export a labelled data set's net")
  if dtype not in ("float32", "float16"):
    raise DataError(f"dtype {dtype!r} is not float32 or float16")
  recipe = {**default_recipe(), **train_kwargs}
  net = train_classifier(
    np.asarray(dataset.train_images), dataset.train_labels, dataset.num_classes, **recipe
  )
  meta = {
    "format": ASSET_FORMAT,
    "source": dataset.name,
    "image_shape": list(net.image_shape),
    "num_classes": net.num_classes,
    "feature_dim": net.feature_dim,
    "classifier_version": CLASSIFIER_VERSION,
    "recipe": recipe,
    "train_fingerprint": train_fingerprint(dataset),
    "dtype": dtype,
    "trained_with": {m.__name__: m.__version__ for m in (jax, flax, optax, np)},
  }
  return {**meta, "sha256": params_file.write_params(path, jax.device_get(net.params), meta, dtype)}


def read_eval_net(
  path: str | os.PathLike, *, sha256: str | None = None
) -> tuple[FeatureNet, dict[str, Any]]:
  """Reads a net written by `export_eval_net`, first checking the file's sha256 if given.

  Returns:
    The `FeatureNet` (float32 parameters) and the asset's metadata.

  Raises:
    DataError: (one line) the file is missing, unreadable, malformed, of another
      architecture, or has another sha256.
  """
  params, meta = params_file.read_params(
    path, sha256=sha256, fix=_ASSET_FIX, what="shipped feature net"
  )
  try:
    if meta["format"] != ASSET_FORMAT:
      raise ValueError(f"format {meta['format']}, not {ASSET_FORMAT}")
    image_shape = tuple(int(d) for d in meta["image_shape"])
    num_classes, feature_dim = int(meta["num_classes"]), int(meta["feature_dim"])
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"feature net {path} has unusable metadata ({e!r}); {_ASSET_FIX}") from e
  abstract = _abstract_params(image_shape, num_classes, feature_dim)
  shapes = lambda tree: {k: v.shape for k, v in traverse_util.flatten_dict(tree).items()}
  if shapes(params) != shapes(abstract):
    raise DataError(f"feature net {path} is not a ClassifierCNN of its metadata; {_ASSET_FIX}")
  return FeatureNet(params, image_shape, num_classes, feature_dim), meta


def _abstract_params(
  image_shape: tuple[int, ...], num_classes: int, feature_dim: int = FEATURE_DIM
) -> Any:
  module = ClassifierCNN(num_classes, feature_dim)
  shapes = jax.eval_shape(
    lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32))
  )
  return shapes["params"]
