"""A trained run's evaluation: what to sample for which task, how to score it, and the pictures.

`evaluate(lsdm, exp, config)` draws the samples a task is scored on, times their generation
and scores them with `metrics.scores` against the canonical test split: one code path, with
what differs by task in `TASKS` (the conditions to generate for, the scorer and what it
adds: the bound's terms for class labels, the decoder's consistency and the per-input spread
for super-resolution). With `eval.inception_weights` it adds the FID protocol as papers
report it (`fid_protocol`): `eval.num_samples` samples generated, quantised to uint8 and
embedded by FID's Inception-v3 a batch at a time, against statistics of the whole train
split computed once and cached by the data's fingerprint, beside the same numbers for real
test images (the floor). `write_pictures` draws the sample grids, reconstructions and curves
of a run. The array-level scorers live in `lsdm_jax.metrics`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from lsdm_jax import config as config_lib
from lsdm_jax import plots
from lsdm_jax.data.experiment import REFERENCES, Experiment
from lsdm_jax.data.sources import Dataset, to_float
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.metrics import image as image_metrics
from lsdm_jax.metrics import scores
from lsdm_jax.metrics.bound import bound_terms
from lsdm_jax.metrics.cas import classification_accuracy_score
from lsdm_jax.metrics.classifier import FeatureNet, load_or_train_classifier
from lsdm_jax.metrics.diversity import superres_spread as spread_of
from lsdm_jax.metrics.feature_stats import (
  REFERENCE_ROWS,
  FeatureFn,
  FeatureStats,
  cache_path,
  feature_stats,
  reference_statistics,
)
from lsdm_jax.metrics.inception import load_inception
from lsdm_jax.model import LSDM

SPREAD_INPUTS = 200  # Test inputs the per-input spread is measured on.
SPREAD_SAMPLES = 8  # Samples per input (and nearest real train images) for the spread.
# Test images the bound's W1 terms use: Sinkhorn time grows as its square, and the estimates
# depend on it (finite-cloud W1), so runs are comparable at the same value only.
BOUND_MAX_POINTS = 500
# The FID protocol: samples generated (and held) at a time, rounded down to whole Inception
# batches; real images read at a time likewise; rows of each set kept for the k-NN metrics
# (ADM's 10,000); the seed of the real images' choice and kept rows, the same for every run.
GENERATE_CHUNK = 1000
KEEP_ROWS = REFERENCE_ROWS
DATA_SEED = 0
# The fewest images of each set: more than the k of the k-NN radii drawn around its points
# (the samples' and the real images' for recall, the reference's also for density/coverage).
MIN_PROTOCOL_IMAGES = scores.K_PRECISION_RECALL + 1
MIN_REFERENCE_IMAGES = max(scores.K_PRECISION_RECALL, scores.K_DENSITY_COVERAGE) + 1


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the `eval` section: what metrics.json scores against, and, when metrics are
  asked for, the Inception weights file and the FID protocol's sample count."""
  config_lib.check_choice(config.eval.reference, REFERENCES, "eval.reference")
  if config.eval.reference == "validation" and config.data.n_validation < 10:
    raise ConfigError(
      "eval.reference='validation' needs held-out rows: set data.n_validation (e.g. 500, "
      "and lower data.n_unpaired by as many)"
    )
  weights = config.eval.inception_weights
  if not (config.eval.enabled and weights):
    return
  if not pathlib.Path(weights).is_file():
    raise DataError(
      f"eval.inception_weights={weights!r} does not exist: pass the pytorch-fid Inception "
      "weights as .npz (lsdm_jax/metrics/inception.py says how), or '' to skip FID"
    )
  n = config.eval.num_samples
  if 0 < n < MIN_PROTOCOL_IMAGES:
    raise ConfigError(
      f"eval.num_samples={n} is too few for the FID protocol's nearest-neighbour metrics "
      f"(k={scores.K_PRECISION_RECALL}): use at least {MIN_PROTOCOL_IMAGES}, or 0 for the "
      "task's own count"
    )


# --------------------------------------------------------------------------- by task


@dataclasses.dataclass(frozen=True)
class _Samples:
  """What a task generates for: the conditions, and what its scorer needs beside them."""

  conditions: np.ndarray
  targets: np.ndarray | None = None  # superres: the test images the inputs come from.


def _label_samples(exp: Experiment, dataset: Dataset, config) -> _Samples:
  """`eval.num_per_class` samples of every class."""
  return _Samples(np.repeat(np.arange(exp.task.num_classes), config.eval.num_per_class))


def _test_samples(exp: Experiment, dataset: Dataset, config) -> _Samples:
  """One sample for each of the first `eval.num_inputs` conditions of the scored images."""
  _, conditions, targets = exp.test_inputs(config.eval.num_inputs, dataset)
  return _Samples(conditions, targets)


def _feature_net(dataset: Dataset) -> FeatureNet | None:
  """The data set's feature net: its classifier, its attribute classifier, or None."""
  if dataset.train_labels is not None and dataset.num_classes > 1:
    return load_or_train_classifier(dataset)
  if dataset.train_attributes is not None:
    return load_or_train_classifier(dataset, attributes=True)
  return None


def _score_labels(lsdm, exp, config, images, samples, dataset, key) -> dict[str, float]:
  net = load_or_train_classifier(exp.dataset)
  out = scores.evaluate_classcond(images, samples.conditions, dataset, net, seed=config.eval.seed)
  if config.eval.cas_steps:  # CAS: a classifier trained on the samples alone.
    out.update(
      classification_accuracy_score(
        images, samples.conditions, dataset, seed=config.eval.seed, steps=config.eval.cas_steps
      )
    )
  if dataset is exp.dataset:  # The bound's terms are about the test split.
    terms = bound_terms(lsdm, exp.dataset, seed=config.eval.seed, max_points=BOUND_MAX_POINTS)
    out.update({f"bound_{k}": v for k, v in terms.items()})
  return out


def _score_attributes(lsdm, exp, config, images, samples, dataset, key) -> dict[str, float]:
  net = load_or_train_classifier(exp.dataset, attributes=True)
  return scores.evaluate_attributes(images, samples.conditions, dataset, net, seed=config.eval.seed)


def _score_superres(lsdm, exp, config, images, samples, dataset, key) -> dict[str, float]:
  inputs, targets, factor = samples.conditions, samples.targets, exp.task.factor
  out = scores.evaluate_superres(images, inputs, targets, factor, _feature_net(exp.dataset))
  del dataset  # The targets are the scored images.
  out["num_samples"] = float(len(images))
  # The decoder's ceiling: how consistent stage 1's own reconstructions of the targets are.
  recon = np.asarray(lsdm.decode(lsdm.encode(targets)))
  out["recon_consistency"] = float(np.mean(image_metrics.consistency(recon, inputs, factor)))
  spread = superres_spread(lsdm, exp, inputs[:SPREAD_INPUTS], jax.random.fold_in(key, 1))
  out.update({k: v for k, v in spread.items() if isinstance(v, float)})
  return out


@dataclasses.dataclass(frozen=True)
class ProtocolSamples:
  """What the FID protocol generates for, a chunk at a time, and its real images.

  Attributes:
    count: the number of samples.
    conditions: (start, stop) → the conditions of samples start..stop - 1, so that no
      more than a chunk of them (superres: low-resolution test images) is ever made.
    real_rows: (M,) int64 sorted rows of the scored data set's test split whose images are
      the real-data floor (superres: the samples' own targets).
  """

  count: int
  conditions: Callable[[int, int], np.ndarray]
  real_rows: np.ndarray


def _real_rows(dataset: Dataset, n: int) -> np.ndarray:
  """n test rows (all if the split has no more), drawn with `DATA_SEED`: the same rows for
  every run, spread over the split whatever its order."""
  m = len(dataset.test_images)
  if n >= m:
    return np.arange(m, dtype=np.int64)
  return np.sort(np.random.default_rng(DATA_SEED).choice(m, n, replace=False)).astype(np.int64)


def _label_protocol(exp: Experiment, dataset: Dataset, config, n: int) -> ProtocolSamples:
  """n labels spread evenly over the classes (0, 1, ..., K - 1, 0, 1, ...)."""
  k = exp.task.num_classes
  return ProtocolSamples(
    n, lambda a, b: (np.arange(a, b) % k).astype(np.int32), _real_rows(dataset, n)
  )


def _attribute_protocol(exp: Experiment, dataset: Dataset, config, n: int) -> ProtocolSamples:
  """The attribute vectors of n train rows drawn with `eval.seed` (without replacement
  where the split has n rows): the data's own joint of conditions, the one the train
  split's images, the reference, come from."""
  attributes = dataset.train_attributes
  rng = np.random.default_rng(config.eval.seed)
  rows = rng.choice(len(attributes), n, replace=n > len(attributes))
  return ProtocolSamples(n, lambda a, b: attributes[rows[a:b]], _real_rows(dataset, n))


def _image_protocol(exp: Experiment, dataset: Dataset, config, n: int) -> ProtocolSamples:
  """One sample per test input: the whole test split, or n of its rows; the real images
  are the inputs' own high-resolution targets."""
  rows = _real_rows(dataset, n)

  def conditions(a: int, b: int) -> np.ndarray:
    return exp.task.condition(to_float(dataset.test_images[rows[a:b]]), None)

  return ProtocolSamples(len(rows), conditions, rows)


@dataclasses.dataclass(frozen=True)
class TaskEvaluation:
  """How runs of one kind of condition are scored.

  Attributes:
    samples: (exp, dataset scored against, config) → the conditions to generate for (and
      the scorer's targets).
    score: (lsdm, exp, config, images, samples, dataset scored against, key) → metrics.
    protocol: (exp, dataset scored against, config, n) → the FID protocol's samples.
  """

  samples: Callable[[Experiment, Dataset, ml_collections.ConfigDict], _Samples]
  score: Callable[..., dict[str, float]]
  protocol: Callable[[Experiment, Dataset, ml_collections.ConfigDict, int], ProtocolSamples]


TASKS = {
  "label": TaskEvaluation(_label_samples, _score_labels, _label_protocol),
  "attributes": TaskEvaluation(_test_samples, _score_attributes, _attribute_protocol),
  "image": TaskEvaluation(_test_samples, _score_superres, _image_protocol),
}


# --------------------------------------------------------------------------- evaluate


def evaluate(lsdm: LSDM, exp: Experiment, config, reference: str | None = None) -> dict[str, float]:
  """Every metric of a trained model, as metrics.json holds them.

  Class labels: `eval.num_per_class` samples per class scored by `evaluate_classcond`, with
  CAS (`metrics.cas`) and the bound's terms. Attributes and super-resolution: one sample for
  each of the first `eval.num_inputs` test conditions, scored by `evaluate_attributes` or
  `evaluate_superres` (with the decoder's `recon_consistency` and the per-input spread,
  `superres_spread`). Every task adds `generate_seconds_per_1000`, timed on a second,
  compiled, call, and with `eval.inception_weights` the FID protocol (`fid_protocol`) on
  `eval.num_samples` samples (0: as many as the task's metrics above use).

  `reference` (default: `eval.reference`) is what the samples are scored against: the
  test split, or, for choosing settings without it, the held-out validation rows
  (`data.n_validation`; `Experiment.validation_reference`) or, class-conditional runs only,
  the run's unpaired train images (`Experiment.unpaired_reference`); the bound's terms,
  which are about the test split, are then left out.

  Returns:
    A flat dict of floats.
  """
  task = TASKS[exp.task.cond_kind]
  dataset = exp.reference(config.eval.reference if reference is None else reference)
  key = jax.random.key(config.eval.seed + 1)
  samples = task.samples(exp, dataset, config)
  images = lsdm.generate(samples.conditions, key)
  t = time.perf_counter()  # Timed again, warm: the first call included compilation.
  jax.block_until_ready(lsdm.generate(samples.conditions, key))
  elapsed = time.perf_counter() - t
  out = task.score(lsdm, exp, config, images, samples, dataset, key)
  out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(images)
  if config.eval.inception_weights:
    n = config.eval.num_samples or len(samples.conditions)
    out.update(fid_protocol(lsdm, exp, config, n, jax.random.fold_in(key, 2), dataset))
  return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- FID protocol


def fid_protocol(
  lsdm: LSDM,
  exp: Experiment,
  config: ml_collections.ConfigDict,
  n: int,
  key: jax.Array,
  dataset: Dataset | None = None,
  *,
  features: FeatureFn | None = None,
  feature_name: str = "",
) -> dict[str, float]:
  """FID, precision/recall and density/coverage in Inception pool features, as papers
  report them, streamed: nothing data-set-sized is held, on a device or on the host.

  The task's `TaskEvaluation.protocol` says what n samples are generated for; they are
  generated `GENERATE_CHUNK` at a time, quantised to uint8 and embedded, and only their
  running mean and covariance and `KEEP_ROWS` seeded feature rows are kept
  (`metrics.feature_stats`). The reference is the whole train split, its statistics
  computed once and cached under its fingerprint (`Dataset.split_fingerprint`) and the
  feature net's; the real images (the task's `real_rows` of the test split, uint8 as
  stored) are scored against it the same way, and cached likewise. `scores.inception_scores`
  names the numbers; `scores.inception_metrics` is the same computation on arrays.

  Args:
    lsdm: the trained model.
    exp: the run's `Experiment`.
    config: the run's config (`eval.seed`, `eval.inception_weights`,
      `eval.inception_batch_size`).
    n: the number of samples (superres: at most the test split's size).
    key: the generator's key; chunk c uses `fold_in(key, c)`.
    dataset: the data set scored against (default `exp.dataset`).
    features: the feature extractor, default FID's Inception-v3 from
      `eval.inception_weights`; called on whole batches of `eval.inception_batch_size`.
    feature_name: names `features` in the cache (required with `features`).

  Returns:
    The dict of `scores.inception_scores`.

  Raises:
    DataError: a set has fewer than `MIN_PROTOCOL_IMAGES` images (the train split:
      `MIN_REFERENCE_IMAGES`), or the samples are not finite.
  """
  dataset = exp.dataset if dataset is None else dataset
  if features is None:
    weights = config.eval.inception_weights
    features = load_inception(weights, batch_size=config.eval.inception_batch_size)
    feature_name = f"inception-{_file_digest(weights)}"
  elif not feature_name:
    raise ValueError("fid_protocol needs a feature_name that names the given features")
  spec = TASKS[exp.task.cond_kind].protocol(exp, dataset, config, int(n))
  sizes = {
    "samples (eval.num_samples)": (spec.count, MIN_PROTOCOL_IMAGES),
    "real test images": (len(spec.real_rows), MIN_PROTOCOL_IMAGES),
    "train images": (len(dataset.train_images), MIN_REFERENCE_IMAGES),
  }
  for what, (size, least) in sizes.items():
    if size < least:
      raise DataError(
        f"the FID protocol has {size} {what}; its nearest-neighbour metrics need at least "
        f"{least}: raise eval.num_samples or use a larger data set"
      )
  batch = config.eval.inception_batch_size
  embed = _whole_batches(features, batch)
  # Chunks of whole Inception batches; the samples' no larger than their number needs.
  chunk = max(1, GENERATE_CHUNK // batch) * batch
  sample_chunk = min(chunk, -(-spec.count // batch) * batch)
  reference = _data_statistics(
    dataset, "train", None, embed, feature_name, chunk, "reference (all train images)"
  )
  real = _data_statistics(dataset, "test", spec.real_rows, embed, feature_name, chunk, "real")
  t = time.perf_counter()
  batches = _sample_batches(lsdm, spec, key, sample_chunk)
  samples = feature_stats(batches, embed, keep=KEEP_ROWS, seed=config.eval.seed)
  logging.info(
    "FID protocol: %d samples generated and embedded in %.1f s",
    samples.count,
    time.perf_counter() - t,
  )
  return scores.inception_scores(samples, reference, real)


def _file_digest(path) -> str:
  """The first 16 hex digits of the file's SHA-256: the weights, wherever they lie."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def _whole_batches(features: FeatureFn, size: int) -> FeatureFn:
  """`features` called on a multiple of `size` images (zero rows appended, their features
  dropped): the Inception net compiles once, for batches of `size`."""

  def embed(images: np.ndarray) -> np.ndarray:
    n = len(images)
    pad = -n % size
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    return np.asarray(features(images))[:n]

  return embed


def _image_batches(images, rows: np.ndarray | None, chunk: int) -> Iterator[np.ndarray]:
  """`images` (or its `rows`) `chunk` at a time, as stored: a `LazyImages` decodes only the
  rows of each chunk."""
  n = len(images) if rows is None else len(rows)
  for start in range(0, n, chunk):
    stop = min(n, start + chunk)
    yield images[start:stop] if rows is None else images[rows[start:stop]]


def _data_statistics(
  dataset: Dataset, split: str, rows, embed: FeatureFn, feature_name: str, chunk: int, what: str
) -> FeatureStats:
  """`reference_statistics` of a split's images (or of its `rows`), cached under
  `Dataset.split_fingerprint`; computed afresh when the data set has no fingerprint."""
  images = dataset.train_images if split == "train" else dataset.test_images
  fingerprint = dataset.split_fingerprint(split, rows)
  t = time.perf_counter()
  if not fingerprint:
    logging.info("FID protocol: %s: data set %s has no fingerprint, not cached", what, dataset.name)
    return feature_stats(_image_batches(images, rows, chunk), embed, keep=KEEP_ROWS, seed=DATA_SEED)
  path = cache_path(fingerprint, feature_name, keep=KEEP_ROWS, seed=DATA_SEED)
  cached = path.exists()
  stats = reference_statistics(
    fingerprint,
    lambda: _image_batches(images, rows, chunk),
    embed,
    feature_name=feature_name,
    keep=KEEP_ROWS,
    seed=DATA_SEED,
  )
  logging.info(
    "FID protocol: %s statistics of %d images %s %s (%.1f s)",
    what,
    stats.count,
    "read from" if cached else "computed and cached at",
    path,
    time.perf_counter() - t,
  )
  return stats


def _sample_batches(lsdm: LSDM, spec: ProtocolSamples, key, chunk: int) -> Iterator[np.ndarray]:
  """The protocol's samples, `chunk` at a time: (k, H, W, C) float32 [0, 1], k <= chunk.

  Chunk c is generated with `fold_in(key, c)`; the last one is padded with copies of its
  last condition to the chunk's size (one compiled shape; a sample depends only on its
  key and row, `noise_per_row`) and the copies are dropped.
  """
  for c, start in enumerate(range(0, spec.count, chunk)):
    x = np.asarray(spec.conditions(start, min(spec.count, start + chunk)))
    k = len(x)
    if k < chunk:
      x = np.concatenate([x, np.repeat(x[-1:], chunk - k, axis=0)])
    yield lsdm.generate(x, jax.random.fold_in(key, c), batch_size=chunk)[:k]


def superres_spread(lsdm: LSDM, exp: Experiment, inputs: np.ndarray, key, path=None) -> dict:
  """`metrics.diversity.superres_spread` of the model's samples for `inputs`.

  The real spread comes from the train images (paired and unpaired) whose pooled
  versions are nearest to each input.

  Args:
    lsdm: the trained model.
    exp: the run's `Experiment`.
    inputs: (N, h, w, C) low-resolution conditions.
    key: the generator's key; `SPREAD_SAMPLES` samples are drawn per input.
    path: if given, a PNG of the 8 inputs where the model is most too sure (per column:
      the input, its samples, then the real neighbours).

  Returns:
    The dict of `metrics.diversity.superres_spread`.
  """
  ds, n = exp.dataset, SPREAD_SAMPLES
  rows = np.concatenate([exp.split.paired, exp.split.unpaired])
  train_images = to_float(ds.train_images[rows])
  samples = np.asarray(lsdm.generate(inputs, key, n=n)).reshape(len(inputs), n, *ds.image_shape)
  out = spread_of(samples, inputs, train_images, exp.task.condition(train_images, None))
  if path is not None:
    worst = np.argsort(out["per_input"] / np.maximum(out["per_input_real"], 1e-12))[:8]
    f = exp.task.factor
    up = inputs[worst].repeat(f, axis=1).repeat(f, axis=2)
    columns = [up[None], samples[worst].transpose(1, 0, 2, 3, 4)]
    columns.append(train_images[out["neighbours"][worst]].transpose(1, 0, 2, 3, 4))
    grid = np.concatenate(columns).reshape(-1, *ds.image_shape)
    plots.save_grid(grid, 1 + 2 * n, path)
  return out


# --------------------------------------------------------------------------- pictures


def write_pictures(wd, exp: Experiment, lsdm: LSDM, histories: dict[str, list]) -> dict:
  """Writes the PNGs of `samples/` and `curves/`; returns the grids by PNG name.

  samples/grid.png (classcond: row k = class k; attributes: a test image, then samples for
  its attribute vector) or samples/superres.png and superres_too_sure.png;
  samples/reconstructions.png (top row real test images, bottom row E→D); one curve PNG
  per stage of `histories` ({'stage1': history, ...}).
  """
  config, ds = lsdm.config, exp.dataset
  samples = pathlib.Path(wd) / "samples"
  key = jax.random.key(config.eval.seed)
  grids = {}
  if exp.task.cond_kind == "attributes":
    grids["grid"] = write_attributes_grid(lsdm, exp, key, samples / "grid.png")
  elif exp.task.cond_kind == "label":
    k = config.eval.grid_per_class
    labels = np.repeat(np.arange(exp.task.num_classes), k)
    images = lsdm.generate(labels, key)
    grids["grid"] = plots.save_grid(images, exp.task.num_classes, samples / "grid.png")
  else:
    grids["superres"] = write_superres_grid(lsdm, exp, key, samples / "superres.png")
    _, inputs, _ = exp.test_inputs(SPREAD_INPUTS)
    spread_key = jax.random.fold_in(jax.random.key(config.eval.seed + 1), 1)
    superres_spread(lsdm, exp, inputs, spread_key, samples / "superres_too_sure.png")
  real = to_float(ds.test_images[np.linspace(0, len(ds.test_images) - 1, 16).astype(int)])
  recon = np.asarray(lsdm.decode(lsdm.encode(real)))
  pairs = np.concatenate([real, recon])
  grids["reconstructions"] = plots.save_grid(pairs, 2, samples / "reconstructions.png")
  for name, history in histories.items():  # E.g. 'stage1' → curves/stage1.png, "stage 1".
    title = name.replace("stage", "stage ")
    plots.save_curves(history, pathlib.Path(wd) / "curves" / f"{name}.png", title)
  logging.info("wrote %s and %s", samples, pathlib.Path(wd) / "curves")
  return grids


def write_attributes_grid(lsdm: LSDM, exp: Experiment, key, path, rows: int = 8, n: int = 8):
  """Writes a PNG of attribute-conditional samples and returns the grid.

  Each row: a test image, then `n` samples asked for that image's attribute vector.
  """
  ds = exp.dataset
  picks = np.linspace(0, len(ds.test_images) - 1, min(rows, len(ds.test_images))).astype(int)
  samples = np.asarray(lsdm.generate(ds.test_attributes[picks], key, n=n))
  real = to_float(ds.test_images[picks])[:, None]
  grid = np.concatenate([real, samples.reshape(len(picks), n, *ds.image_shape)], axis=1)
  return plots.save_grid(grid.reshape(-1, *ds.image_shape), len(picks), path)


def write_superres_grid(
  lsdm: LSDM, exp: Experiment, key, path, num_inputs: int = 8, n: int = 8
) -> np.ndarray:
  """Writes a PNG of super-resolved test images and returns the grid (`plots.save_grid`).

  Columns: `num_inputs` test images spread over the split; rows: the input (nearest-
  upsampled), `n` samples, the ground truth.
  """
  ds, f = exp.dataset, exp.task.factor
  rows = np.linspace(0, len(ds.test_images) - 1, min(num_inputs, len(ds.test_images)))
  targets = to_float(ds.test_images[rows.astype(int)])
  inputs = exp.task.condition(targets, None)
  samples = np.asarray(lsdm.generate(inputs, key, n=n)).reshape(len(targets), n, *targets.shape[1:])
  upsampled = inputs.repeat(f, axis=1).repeat(f, axis=2)
  grid = np.concatenate([upsampled[None], samples.transpose(1, 0, 2, 3, 4), targets[None]])
  return plots.save_grid(grid.reshape(-1, *targets.shape[1:]), n + 2, path)
