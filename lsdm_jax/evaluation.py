"""A trained run's evaluation: what to sample for which task, how to score it, and the pictures.

`evaluate(lsdm, exp, config)` draws the samples a task is scored on, times their generation
and scores them with `metrics.scores` against the canonical test split: one code path, with
what differs by task in `TASKS` (the conditions to generate for, the scorer and what it
adds: the bound's terms for class labels, the decoder's consistency and the per-input spread
for super-resolution). `write_pictures` draws the sample grids, reconstructions and curves
of a run. The array-level scorers live in `lsdm_jax.metrics`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable

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
from lsdm_jax.model import LSDM

SPREAD_INPUTS = 200  # Test inputs the per-input spread is measured on.
SPREAD_SAMPLES = 8  # Samples per input (and nearest real train images) for the spread.
# Test images the bound's W1 terms use: Sinkhorn time grows as its square, and the estimates
# depend on it (finite-cloud W1), so runs are comparable at the same value only.
BOUND_MAX_POINTS = 500


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the `eval` section: what metrics.json scores against, and the Inception weights
  file when metrics are asked for."""
  config_lib.check_choice(config.eval.reference, REFERENCES, "eval.reference")
  if config.eval.reference == "validation" and config.data.n_validation < 10:
    raise ConfigError(
      "eval.reference='validation' needs held-out rows: set data.n_validation (e.g. 500, "
      "and lower data.n_unpaired by as many)"
    )
  weights = config.eval.inception_weights
  if config.eval.enabled and weights and not pathlib.Path(weights).is_file():
    raise DataError(
      f"eval.inception_weights={weights!r} does not exist: pass the pytorch-fid Inception "
      "weights as .npz (lsdm_jax/metrics/inception.py says how), or '' to skip FID"
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
  # CAS: a classifier trained on the samples alone, scored on the real images.
  out.update(
    classification_accuracy_score(images, samples.conditions, dataset, seed=config.eval.seed)
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
class TaskEvaluation:
  """How runs of one kind of condition are scored.

  Attributes:
    samples: (exp, dataset scored against, config) → the conditions to generate for (and
      the scorer's targets).
    score: (lsdm, exp, config, images, samples, dataset scored against, key) → metrics.
  """

  samples: Callable[[Experiment, Dataset, ml_collections.ConfigDict], _Samples]
  score: Callable[..., dict[str, float]]


TASKS = {
  "label": TaskEvaluation(_label_samples, _score_labels),
  "attributes": TaskEvaluation(_test_samples, _score_attributes),
  "image": TaskEvaluation(_test_samples, _score_superres),
}


# --------------------------------------------------------------------------- evaluate


def evaluate(lsdm: LSDM, exp: Experiment, config, reference: str | None = None) -> dict[str, float]:
  """Every metric of a trained model, as metrics.json holds them.

  Class labels: `eval.num_per_class` samples per class scored by `evaluate_classcond`, with
  CAS (`metrics.cas`) and the bound's terms. Attributes and super-resolution: one sample for
  each of the first `eval.num_inputs` test conditions, scored by `evaluate_attributes` or
  `evaluate_superres` (with the decoder's `recon_consistency` and the per-input spread,
  `superres_spread`). Every task adds `generate_seconds_per_1000`, timed on a second,
  compiled, call, and with `eval.inception_weights` FID and precision/recall in Inception
  features (`scores.inception_metrics`).

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
  weights = config.eval.get("inception_weights", "")
  if weights:
    out.update(scores.inception_metrics(images, dataset, weights, seed=config.eval.seed))
  return {k: float(v) for k, v in out.items()}


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
