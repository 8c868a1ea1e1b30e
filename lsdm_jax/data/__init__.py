"""Data sources, canonical splits, tasks (what x and y are) and sharded batches."""

from lsdm_jax.data.experiment import Experiment, load_experiment
from lsdm_jax.data.sources import Dataset, load_source
from lsdm_jax.data.splits import PairedSplit, canonical_split, paired_unpaired_split
from lsdm_jax.data.tasks import Task, make_task

__all__ = [
  "Dataset",
  "Experiment",
  "PairedSplit",
  "Task",
  "canonical_split",
  "load_experiment",
  "load_source",
  "make_task",
  "paired_unpaired_split",
]
