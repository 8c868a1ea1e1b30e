"""The data side of a run: the data set, the task, and the paired/unpaired split.

`load_experiment(config)` loads the data source of `config.data`, builds the task of
`config.task` and draws the paired/unpaired split; every stage and the evaluation read the
run's data through the `Experiment` it returns.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from lsdm_jax.data.sources import Dataset, load_source, to_float
from lsdm_jax.data.splits import PairedSplit, paired_unpaired_split
from lsdm_jax.data.tasks import Task, make_task
from lsdm_jax.errors import ConfigError, DataError

# What a run's samples can be scored against (`Experiment.reference`).
REFERENCES = ("test", "validation", "unpaired")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The data set, the task, and the paired/unpaired split of a run."""

  dataset: Dataset
  task: Task
  split: PairedSplit

  def paired_conditions(self, rows: np.ndarray | None = None) -> np.ndarray:
    """Conditions x of the paired examples (or of paired examples `rows` only)."""
    ds, idx = self.dataset, self.split.paired
    idx = idx if rows is None else idx[rows]
    labels = None if ds.train_labels is None else ds.train_labels[idx]
    images = to_float(ds.train_images[idx]) if self.task.cond_kind == "image" else None
    attributes = None if ds.train_attributes is None else ds.train_attributes[idx]
    return self.task.condition(images, labels, attributes)

  def unpaired_conditions(self) -> np.ndarray:
    """Exact conditions of the unpaired images, where the task defines them (superres)."""
    if self.task.cond_kind != "image":
      raise ConfigError(f"task {self.task.name!r} has no exact condition for unpaired images")
    images = to_float(self.dataset.train_images[self.split.unpaired])
    return self.task.condition(images, None)

  def test_inputs(
    self, num: int, dataset: Dataset | None = None
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first min(num, test size) test images as (rows, conditions, images).

    `rows` index `dataset.test_images` (`dataset.test_index[rows]` are source rows); the
    conditions are the images' (superres: the images average-pooled by the task's
    factor), all float32 in [0, 1]. `dataset`: a `reference` view to take them from
    (default: the data set itself, i.e. the test split).
    """
    ds = self.dataset if dataset is None else dataset
    rows = np.arange(min(int(num), len(ds.test_images)))
    targets = to_float(ds.test_images[rows])
    labels = None if ds.test_labels is None else ds.test_labels[rows]
    attributes = None if ds.test_attributes is None else ds.test_attributes[rows]
    return rows, self.task.condition(targets, labels, attributes), targets

  def reference(self, name: str) -> Dataset:
    """The data set with the images of reference `name` as its test split: 'test' (the
    data set itself), 'validation' (`validation_reference`) or 'unpaired'
    (`unpaired_reference`)."""
    if name == "test":
      return self.dataset
    if name == "validation":
      return self.validation_reference()
    if name == "unpaired":
      return self.unpaired_reference()
    raise ConfigError(f"reference {name!r} is not one of {REFERENCES}")

  def validation_reference(self) -> Dataset:
    """The data set seen from the validation rows: they stand in for the test split.

    The validation rows (`data.n_validation`) are train images that no stage trains on, so
    settings chosen by scoring against them leave the test split untouched until the final
    runs. The real-vs-real baselines draw from the train rows the run does train on.

    Raises:
      DataError: the run holds out no validation rows.
    """
    split = self.split
    if len(split.validation) < 10:  # Too few for a covariance or k-nearest-neighbour radii.
      raise DataError(
        f"reference 'validation' needs at least 10 validation rows; this run has "
        f"{len(split.validation)}: set data.n_validation (e.g. 500, and lower "
        "data.n_unpaired by as many)"
      )
    used = np.concatenate([split.paired, split.unpaired])
    return self._view(used, split.validation, "validation reference")

  def _view(self, train_rows: np.ndarray, test_rows: np.ndarray, name: str) -> Dataset:
    """The data set with train rows `train_rows` as its train split and `test_rows` (both
    indices into the train split) as its test split, its fingerprint suffixed by `name`:
    its 'test' rows index the train split, so no cache of the real test split's statistics
    is taken for theirs."""
    ds = self.dataset
    pick = lambda a, rows: None if a is None else a[rows]  # noqa: E731
    return dataclasses.replace(
      ds,
      train_images=ds.train_images[train_rows],
      train_labels=pick(ds.train_labels, train_rows),
      test_images=ds.train_images[test_rows],
      test_labels=pick(ds.train_labels, test_rows),
      train_index=ds.train_index[train_rows],
      test_index=ds.train_index[test_rows],
      train_attributes=pick(ds.train_attributes, train_rows),
      test_attributes=pick(ds.train_attributes, test_rows),
      fingerprint=f"{ds.fingerprint}|{name}" if ds.fingerprint else "",
    )

  def unpaired_reference(self) -> Dataset:
    """The data set seen from the run's unpaired images: they stand in for the test split.

    Scoring against them instead of the test split lets a user compare stage-2 settings
    without looking at the test images. The paper's stage 2 never sees them (only stage 1
    does, without labels); with `stage2.unpaired_weight > 0` G is trained towards them, so
    they are no longer held out from stage 2. The real-vs-real baselines use the paired
    images.

    Raises:
      DataError: the run is not class-conditional, or has fewer than 10 unpaired images.
    """
    split = self.split
    if self.task.cond_kind != "label":
      raise DataError("reference 'unpaired' scores class-conditional runs only; use 'test'")
    if len(split.unpaired) < 10:  # Too few for a covariance or k-nearest-neighbour radii.
      raise DataError(
        f"reference 'unpaired' needs at least 10 unpaired images; this run has "
        f"{len(split.unpaired)} (data.n_unpaired): use reference 'test'"
      )
    return self._view(split.paired, split.unpaired, "unpaired reference")


def load_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Loads the data of a (checked) config and draws its split.

  Raises:
    DataError: the data are missing or unusable.
    ConfigError: the task does not fit the data, or a class has no paired example.
  """
  ds = load_source(
    config.data.source,
    data_dir=config.data.data_dir or None,
    image_size=config.data.image_size,
    streaming=config.data.streaming,
    attributes=tuple(config.data.attributes),
  )
  task = make_task(
    config.task.name,
    ds.image_shape,
    ds.num_classes,
    config.task.factor,
    len(ds.attribute_names),
  )
  split = paired_unpaired_split(
    ds.train_labels,
    config.data.n_paired,
    config.data.n_unpaired,
    config.data.split_seed,
    num_train=len(ds.train_images),
    require_every_class=task.cond_kind == "label",
    n_validation=config.data.n_validation,
  )
  if task.cond_kind == "label":
    counts = np.bincount(ds.train_labels[split.paired], minlength=ds.num_classes)
    if np.any(counts == 0):
      missing = np.flatnonzero(counts == 0).tolist()
      raise ConfigError(
        f"class(es) {missing} of 0..{ds.num_classes - 1} have no paired example in the train "
        "split; every class needs one: raise data.n_paired, or relabel the data as 0..K-1"
      )
  return Experiment(ds, task, split)
