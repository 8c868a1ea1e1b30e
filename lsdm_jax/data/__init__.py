"""Data sources, canonical splits, tasks (what x and y are) and sharded batches."""

from lsdm_jax.data.sources import Dataset, load_source
from lsdm_jax.data.splits import PairedSplit, canonical_split, paired_unpaired_split
from lsdm_jax.data.tasks import Task, make_task

__all__ = [
  "Dataset",
  "PairedSplit",
  "Task",
  "canonical_split",
  "load_source",
  "make_task",
  "paired_unpaired_split",
]
