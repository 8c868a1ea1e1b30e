"""The canonical train/test split and the seeded paired/unpaired split of train."""

from __future__ import annotations

import dataclasses

import numpy as np

from lsdm_jax.errors import ConfigError


def canonical_split(n: int) -> tuple[np.ndarray, np.ndarray]:
  """Row i is test when i % 5 == 4, else train.

  Returns:
    (train_rows, test_rows), int64 index arrays into the source.
  """
  rows = np.arange(n)
  test = rows % 5 == 4
  return rows[~test], rows[test]


@dataclasses.dataclass(frozen=True)
class PairedSplit:
  """Indices into the train split: `paired` keep their condition, `unpaired` only y, and
  `validation` (empty unless asked for) are held out of training to choose settings on."""

  paired: np.ndarray
  unpaired: np.ndarray
  validation: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def _stratified_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
  """Splits `total` over classes in proportion to their sizes (largest remainder)."""
  share = class_sizes / class_sizes.sum() * total
  counts = np.floor(share).astype(np.int64)
  order = np.argsort(-(share - counts), kind="stable")
  counts[order[: total - counts.sum()]] += 1
  return np.minimum(counts, class_sizes)


def paired_unpaired_split(
  labels: np.ndarray | None,
  n_paired: int,
  n_unpaired: int,
  seed: int,
  *,
  num_train: int | None = None,
  require_every_class: bool = True,
  n_validation: int = 0,
) -> PairedSplit:
  """Seeded, class-stratified split of the train split into paired and unpaired rows, after
  `n_validation` rows are held out.

  The validation rows are drawn first, class-stratified, with their own seed
  ([seed, 1]), and the paired and unpaired rows from the rest exactly as without them, so a
  split with `n_validation=0` is the split of earlier versions.

  Args:
    labels: (N,) int train labels, or None for unlabelled data (then a plain random split).
    n_paired: number of paired (x, y) examples.
    n_unpaired: number of unpaired images (their labels are never used).
    seed: the split's seed; the same seed gives the same split.
    num_train: size of the train split when `labels` is None.
    require_every_class: refuse a split that leaves a class without a paired example.
    n_validation: train rows held out of both, to choose settings on (`data.n_validation`).

  Returns:
    Disjoint sorted index arrays into the train split.
  """
  n = len(labels) if labels is not None else num_train
  if n is None:
    raise ValueError("num_train is required when labels is None")
  if n_validation:
    if n_validation < 0 or n_validation + n_paired + n_unpaired > n:
      raise ConfigError(
        f"data.n_validation={n_validation} + data.n_paired + data.n_unpaired = "
        f"{n_validation + n_paired + n_unpaired}, but the train split has only {n} rows; "
        "lower one of them"
      )
    rng = np.random.default_rng([seed, 1])
    if labels is None:
      validation = rng.choice(n, n_validation, replace=False)
    else:
      classes, inverse = np.unique(labels, return_inverse=True)
      counts = _stratified_counts(np.bincount(inverse, minlength=len(classes)), n_validation)
      validation = np.concatenate(
        [rng.choice(np.flatnonzero(inverse == c), k, replace=False) for c, k in enumerate(counts)]
      )
    rest = np.setdiff1d(np.arange(n), validation)
    inner = paired_unpaired_split(
      None if labels is None else labels[rest],
      n_paired,
      n_unpaired,
      seed,
      num_train=len(rest),
      require_every_class=require_every_class,
    )
    return PairedSplit(rest[inner.paired], rest[inner.unpaired], np.sort(validation))
  if n_paired < 1 or n_unpaired < 0:
    raise ConfigError(
      f"data.n_paired={n_paired} and data.n_unpaired={n_unpaired}: need n_paired >= 1 and "
      "n_unpaired >= 0"
    )
  if n_paired + n_unpaired > n:
    raise ConfigError(
      f"data.n_paired + data.n_unpaired = {n_paired + n_unpaired} but the train split has "
      f"only {n} rows; lower one of them"
    )
  rng = np.random.default_rng(seed)
  if labels is None:
    perm = rng.permutation(n)
    return PairedSplit(np.sort(perm[:n_paired]), np.sort(perm[n_paired : n_paired + n_unpaired]))

  classes, inverse = np.unique(labels, return_inverse=True)
  sizes = np.bincount(inverse, minlength=len(classes))
  paired_counts = _stratified_counts(sizes, n_paired)
  if require_every_class and np.any(paired_counts == 0):
    missing = classes[paired_counts == 0].tolist()
    raise ConfigError(
      f"data.n_paired={n_paired} leaves class(es) {missing} with no paired example; "
      f"use at least {len(classes)} paired examples"
    )
  unpaired_counts = _stratified_counts(sizes - paired_counts, n_unpaired)
  # Rounding can leave the stratified total short when classes are exhausted; fill it.
  paired, unpaired = [], []
  leftovers = []
  for c in range(len(classes)):
    rows = rng.permutation(np.flatnonzero(inverse == c))
    p, u = paired_counts[c], unpaired_counts[c]
    paired.append(rows[:p])
    unpaired.append(rows[p : p + u])
    leftovers.append(rows[p + u :])
  rest = rng.permutation(np.concatenate(leftovers))
  short = n_unpaired - sum(len(u) for u in unpaired)
  unpaired.append(rest[:short])
  return PairedSplit(np.sort(np.concatenate(paired)), np.sort(np.concatenate(unpaired)))
