"""Semi-supervised stage 2: conditions for the unpaired latents (an extension, off by default).

The paper's stage 2 fits G to the paired latents alone. With `semi.enabled` the unpaired
latents get conditions and join them as pseudo pairs:

* superres: the degradation is known (x = average-pooled y), so every unpaired image has
  its exact condition. This makes the task fully paired.
* classcond: a labeller fitted on the paired latents gives each unpaired latent class
  probabilities. The labeller is label spreading (Zhou et al., 2004) over a k-nearest-
  neighbour graph of paired ∪ unpaired standardised latents: labels flow along the
  unpaired images' own manifold, which a classifier of the 50 paired latents per class
  cannot see. Pseudo pairs are the unpaired latents whose top probability reaches
  `threshold`; each weighs `pseudo_weight` against a true pair (times its confidence with
  `weighting='soft'`), and with `balance` the pseudo pairs of each class together weigh
  in proportion to the paired set's share of that class.

`stage2_data` builds stage 2's data from the run's latents; `sampling_cdf` turns the
pairs' weights into the cumulative distribution stage 2 draws its batches from; nothing
else in stage 2 changes.
"""

from __future__ import annotations

import dataclasses
import io
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lsdm_jax import config as config_lib
from lsdm_jax import latents, parallel
from lsdm_jax import workdir as workdir_lib
from lsdm_jax.data.experiment import Experiment
from lsdm_jax.errors import ConfigError, DataError

LABELLERS = ("label_spreading", "knn")
WEIGHTINGS = ("hard", "soft")
NO_UNPAIRED = (
  "semi.enabled needs unpaired images, and data.n_unpaired=0: raise data.n_unpaired "
  "or set semi.enabled=False"
)


def knn_graph(z, k: int, block: int = 1024) -> tuple[jax.Array, jax.Array]:
  """The k nearest other rows of each row of z (N, d): (indices (N, k), squared distances).

  Distances are computed a block of rows at a time, so memory is O(block · N).
  """
  z = jnp.asarray(z, jnp.float32)
  n = z.shape[0]
  block = min(block, n)
  sq = jnp.sum(z * z, axis=1)

  @jax.jit
  def rows(a, start):
    d2 = jnp.maximum(sq[None] + jnp.sum(a * a, 1)[:, None] - 2.0 * a @ z.T, 0.0)
    d2 = jnp.where(jnp.arange(n)[None] == (start + jnp.arange(block))[:, None], jnp.inf, d2)
    neg, idx = jax.lax.top_k(-d2, k)
    return idx, -neg

  padded = -(-n // block) * block
  # The last block is padded with copies of the last row; their results are dropped.
  z_rows = jnp.concatenate([z, jnp.repeat(z[-1:], padded - n, axis=0)])
  parts = [rows(z_rows[s : s + block], s) for s in range(0, padded, block)]
  idx = jnp.concatenate([p[0] for p in parts])[:n]
  return idx, jnp.concatenate([p[1] for p in parts])[:n]


def label_spreading(
  z_paired,
  labels,
  z_unpaired,
  num_classes: int,
  *,
  neighbours: int = 5,
  alpha: float = 0.9,
  iterations: int = 100,
) -> jax.Array:
  """Class probabilities (M, K) of the unpaired rows by label spreading.

  Graph: each row's `neighbours` nearest rows of paired ∪ unpaired, weights
  exp(-d² / (σ_i σ_j)) with σ_i the distance to row i's furthest neighbour (a local
  scale), symmetrised as (W + Wᵀ) / 2 and normalised as D^-1/2 W D^-1/2. Spreading
  iterates F ← α S F + (1 − α) Y from the one-hot paired labels Y. Class-mass
  normalisation then rescales each class's column so that the unpaired mass of each class
  matches its share of the paired set, and rows are normalised to probabilities.
  """
  z_paired, z_unpaired = np.asarray(z_paired, np.float32), np.asarray(z_unpaired, np.float32)
  labels = np.asarray(labels)
  n_l = len(z_paired)
  z = jnp.asarray(np.concatenate([z_paired, z_unpaired]))
  n = z.shape[0]
  k = min(int(neighbours), n - 1)
  idx, d2 = knn_graph(z, k)
  sigma = jnp.sqrt(jnp.maximum(d2[:, -1], 1e-12))
  w = jnp.exp(-d2 / (sigma[:, None] * sigma[idx]))
  rows = jnp.repeat(jnp.arange(n), k)

  def apply_w(f):  # (W + Wᵀ) / 2 · f, with W sparse (rows, idx).
    wf = jnp.einsum("nk,nkc->nc", w, f[idx])
    wtf = jax.ops.segment_sum((w.reshape(-1, 1) * f[rows]), idx.reshape(-1), num_segments=n)
    return 0.5 * (wf + wtf)

  degree = apply_w(jnp.ones((n, 1)))[:, 0]
  dinv = 1.0 / jnp.sqrt(jnp.maximum(degree, 1e-12))
  y = jnp.zeros((n, num_classes)).at[jnp.arange(n_l), jnp.asarray(labels)].set(1.0)

  @jax.jit
  def spread(y):
    def body(_, f):
      return alpha * dinv[:, None] * apply_w(dinv[:, None] * f) + (1.0 - alpha) * y

    return jax.lax.fori_loop(0, iterations, body, y)

  f_u = jnp.maximum(spread(y)[n_l:], 0.0)
  prior = jnp.bincount(jnp.asarray(labels), length=num_classes) / n_l
  f_u = f_u * prior[None] / jnp.maximum(f_u.sum(0), 1e-12)[None]
  total = f_u.sum(1, keepdims=True)
  uniform = jnp.full_like(f_u, 1.0 / num_classes)
  return jnp.where(total > 0, f_u / jnp.maximum(total, 1e-30), uniform)


def knn_vote(z_paired, labels, z_query, num_classes: int, *, neighbours: int = 5) -> jax.Array:
  """Class probabilities (M, K): the label shares among each query's nearest paired rows."""
  z_paired = jnp.asarray(z_paired, jnp.float32)
  z_query = jnp.asarray(z_query, jnp.float32)
  k = min(int(neighbours), z_paired.shape[0])
  d2 = jnp.sum(z_query**2, 1)[:, None] + jnp.sum(z_paired**2, 1)[None] - 2.0 * z_query @ z_paired.T
  _, idx = jax.lax.top_k(-d2, k)
  votes = jax.nn.one_hot(jnp.asarray(labels)[idx], num_classes)
  return votes.mean(1)


def check_labeller_data(labels, n_unpaired: int, num_classes: int) -> None:
  """The labeller needs unpaired latents and a paired example of every class."""
  if n_unpaired == 0:
    raise ConfigError(NO_UNPAIRED)
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  if np.any(counts == 0):
    missing = np.flatnonzero(counts == 0).tolist()
    raise DataError(
      f"the semi-supervised labeller has no paired example of class(es) {missing}; "
      "raise data.n_paired so every class has one"
    )


def class_probabilities(cfg, z_paired, labels, z_unpaired, num_classes: int) -> jax.Array:
  """(M, K) class probabilities of the unpaired latents from the labeller `cfg.labeller`."""
  check_labeller_data(labels, len(z_unpaired), num_classes)
  if cfg.labeller == "label_spreading":
    return label_spreading(
      z_paired,
      labels,
      z_unpaired,
      num_classes,
      neighbours=cfg.neighbours,
      alpha=cfg.alpha,
      iterations=cfg.iterations,
    )
  if cfg.labeller == "knn":
    return knn_vote(z_paired, labels, z_unpaired, num_classes, neighbours=cfg.neighbours)
  raise ConfigError(f"semi.labeller={cfg.labeller!r} is not one of {LABELLERS}")


@dataclasses.dataclass(frozen=True)
class PseudoPairs:
  """The unpaired latents chosen as pseudo pairs, with their labels and weights.

  Attributes:
    rows: (S,) rows of the unpaired latents kept (confidence >= threshold).
    labels: (S,) their pseudo-labels (the labeller's most probable class).
    weights: (S,) each one's weight against a true pair's 1.
    confidence: (M,) the top probability of every unpaired latent.
    predicted: (M,) the most probable class of every unpaired latent.
  """

  rows: np.ndarray
  labels: np.ndarray
  weights: np.ndarray
  confidence: np.ndarray
  predicted: np.ndarray


def pseudo_pairs(cfg, probs, paired_labels, num_classes: int) -> PseudoPairs:
  """Selects and weighs pseudo pairs from the labeller's probabilities (see module doc)."""
  probs = np.asarray(probs, np.float64)
  predicted = probs.argmax(1).astype(np.int32)
  confidence = probs.max(1)
  rows = np.flatnonzero(confidence >= cfg.threshold)
  labels = predicted[rows]
  weights = np.full(len(rows), float(cfg.pseudo_weight))
  if cfg.weighting == "soft":
    weights = weights * confidence[rows]
  if cfg.balance and len(rows):
    share = np.bincount(np.asarray(paired_labels), minlength=num_classes) / len(paired_labels)
    mass = np.bincount(labels, weights=weights, minlength=num_classes)
    target = share * weights.sum()
    scale = np.divide(target, mass, out=np.zeros(num_classes), where=mass > 0)
    weights = weights * scale[labels]
  return PseudoPairs(rows, labels, weights.astype(np.float32), confidence, predicted)


def sampling_cdf(weights) -> np.ndarray:
  """The cumulative distribution (N,) that draws row i with probability ∝ weights[i]."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or len(w) == 0 or np.any(w < 0) or not w.sum() > 0:
    raise DataError("pair weights must be a non-empty vector of non-negative numbers, not all 0")
  cdf = np.cumsum(w / w.sum())
  cdf[-1] = 1.0
  return cdf.astype(np.float32)


def draw_rows(key: jax.Array, cdf: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Rows drawn with replacement, row i with probability cdf[i] − cdf[i − 1]."""
  u = jax.random.uniform(key, shape)
  return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


def stage2_data(config, exp: Experiment, data: dict, stats, ae_model, ae_params, mesh, wd):
  """Stage 2's data with the unpaired latents as (weighted) pseudo pairs.

  classcond: labels from the labeller on the standardised latents; its accuracy on the
  unpaired images and on the test split is measured with their true labels, which
  nothing else reads. superres: the unpaired images' exact pooled conditions.

  Args:
    config: the run's config (its `semi` section).
    exp: the run's `Experiment`.
    data: stage 2's data: 'x' (n_paired, ...) conditions, 'z' (n_paired, D) and
      'z_unpaired' (>= n_unpaired, D) standardised latents.
    stats: the latents' (mean, std), to standardise the test latents.
    ae_model, ae_params: stage 1's autoencoder, to encode the test split (classcond).
    mesh: the device mesh.
    wd: the workdir; process 0 writes `semi_labels.npz` there (classcond).

  Returns:
    (data with 'x', 'z' extended and 'cdf', metrics as {'semi_*': value}).
  """
  cfg, task, split, ds = config.semi, exp.task, exp.split, exp.dataset
  x, z, z_u = parallel.to_host((data["x"], data["z"], data["z_unpaired"]))
  z_u = z_u[: len(split.unpaired)]
  n_paired = len(x)
  if task.cond_kind == "label":
    t = time.perf_counter()
    probs = class_probabilities(cfg, z, x, z_u, task.num_classes)
    pairs = pseudo_pairs(cfg, probs, x, task.num_classes)
    truth = ds.train_labels[split.unpaired]  # Diagnostics only.
    kept = pairs.rows
    # Test split: each test latent takes the vote of its neighbours among the labelled
    # paired and pseudo-labelled unpaired latents (the labeller's inductive extension).
    z_test = latents.standardise(
      parallel.to_host(latents.encode(ae_model, ae_params, ds.test_images, mesh)),
      *parallel.to_host(stats),
    )[: len(ds.test_images)]
    vote = knn_vote(
      np.concatenate([z, z_u]),
      np.concatenate([x, pairs.predicted]),
      z_test,
      task.num_classes,
      neighbours=cfg.neighbours,
    )
    metrics = {
      "semi_labeller_accuracy_unpaired": float(np.mean(pairs.predicted == truth)),
      "semi_labeller_accuracy_kept": float(np.mean(pairs.labels == truth[kept]))
      if len(kept)
      else 0.0,
      "semi_labeller_accuracy_test": float(np.mean(np.argmax(vote, 1) == ds.test_labels)),
      "semi_coverage": float(len(kept) / len(z_u)),
      "semi_pseudo_pairs": float(len(kept)),
      "semi_labeller_seconds": time.perf_counter() - t,
    }
    new_x, new_z, weights = pairs.labels, z_u[kept], pairs.weights
    if parallel.is_main_process():
      buffer = io.BytesIO()
      np.savez(
        buffer,
        rows=split.unpaired[kept],
        unpaired_index=kept,
        labels=pairs.labels,
        weights=pairs.weights,
        confidence=pairs.confidence,
        predicted=pairs.predicted,
      )
      workdir_lib.atomic_write(wd / "semi_labels.npz", buffer.getvalue())
  else:
    new_x, new_z = exp.unpaired_conditions(), z_u
    weights = np.full(len(z_u), float(cfg.pseudo_weight), np.float32)
    metrics = {"semi_pseudo_pairs": float(len(z_u)), "semi_coverage": 1.0}
  logging.info("semi-supervised stage 2: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
  cdf = sampling_cdf(np.concatenate([np.ones(n_paired, np.float32), weights]))
  out = dict(data)
  out["x"] = np.concatenate([x, np.asarray(new_x, x.dtype)])
  out["z"] = np.concatenate([z, new_z])
  out["cdf"] = cdf
  return out, metrics


def check_config(c) -> None:
  """Checks the `semi` section: its choices, and that there are unpaired images to label."""
  config_lib.check_choice(c.semi.labeller, LABELLERS, "semi.labeller")
  config_lib.check_choice(c.semi.weighting, WEIGHTINGS, "semi.weighting")
  if c.semi.enabled and c.data.n_unpaired == 0:
    raise ConfigError(NO_UNPAIRED)
