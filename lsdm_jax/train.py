"""`train_and_evaluate(config, workdir)`: the whole LSDM pipeline, stage by stage.

data → stage 1 (E, D on paired ∪ unpaired) → latents (Orbax) → stage 2 (G on paired
latents) → sample grids → metrics.json. Each stage reads only what the previous one
wrote to the workdir, resumes from its checkpoints, and is skipped once finished.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from lsdm_jax import config as config_lib
from lsdm_jax import latents, parallel, plots, stage1, stage2, summaries
from lsdm_jax import model as model_lib
from lsdm_jax import workdir as workdir_lib
from lsdm_jax.data import Dataset, PairedSplit, Task, load_source, make_task, paired_unpaired_split
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.loop import OPERATIONAL_FIELDS


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The data side of a run: the data set, the task, and the paired/unpaired split."""

  dataset: Dataset
  task: Task
  split: PairedSplit

  def paired_conditions(self, rows: np.ndarray | None = None) -> np.ndarray:
    """Conditions x of the paired examples (or of paired examples `rows` only)."""
    ds, idx = self.dataset, self.split.paired
    idx = idx if rows is None else idx[rows]
    labels = None if ds.train_labels is None else ds.train_labels[idx]
    images = to_float(ds.train_images[idx]) if self.task.cond_kind == "image" else None
    return self.task.condition(images, labels)

  def unpaired_conditions(self) -> np.ndarray:
    """Exact conditions of the unpaired images, where the task defines them (superres)."""
    if self.task.cond_kind != "image":
      raise ConfigError(f"task {self.task.name!r} has no exact condition for unpaired images")
    images = to_float(self.dataset.train_images[self.split.unpaired])
    return self.task.condition(images, None)


def setup(config: ml_collections.ConfigDict) -> Experiment:
  """Loads the data and checks the task and split (fails before touching the workdir)."""
  config_lib.validate(config)
  ds = load_source(
    config.data.source, data_dir=config.data.data_dir or None, image_size=config.data.image_size
  )
  task = make_task(config.task.name, ds.image_shape, ds.num_classes, config.task.factor)
  split = paired_unpaired_split(
    ds.train_labels,
    config.data.n_paired,
    config.data.n_unpaired,
    config.data.split_seed,
    num_train=len(ds.train_images),
    require_every_class=task.cond_kind == "label",
  )
  _check_training(config, ds, task, split)
  return Experiment(ds, task, split)


def _check_training(config, ds: Dataset, task: Task, split: PairedSplit) -> None:
  """Checks what the stages would otherwise find only after the workdir is written."""
  from lsdm_jax.loop import LoopConfig
  from lsdm_jax.models.autoencoder import check_image_shape

  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  for name in ("stage1", "stage2"):
    LoopConfig.from_config(name, config[name]).validate(name)
    parallel.check_batch_size(config[name].batch_size, mesh, f"{name}.batch_size")
  if config.stage1.steps_per_call != 1:
    raise ConfigError("stage1.steps_per_call must be 1 (stage-1 batches come from the host)")
  check_image_shape(ds.image_shape, len(config.stage1.features))
  if task.cond_kind == "label":
    counts = np.bincount(ds.train_labels[split.paired], minlength=ds.num_classes)
    if np.any(counts == 0):
      missing = np.flatnonzero(counts == 0).tolist()
      raise ConfigError(
        f"class(es) {missing} of 0..{ds.num_classes - 1} have no paired example in the train "
        "split; every class needs one: raise data.n_paired, or relabel the data as 0..K-1"
      )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, overwrite: bool = False
) -> dict[str, float]:
  """Runs (or resumes) every stage and returns the evaluation metrics."""
  t_start = time.perf_counter()
  exp = setup(config)
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  if parallel.is_main_process():
    workdir_lib.prepare(workdir, config, overwrite=overwrite)
  parallel.sync("workdir")  # The others wait until process 0 has checked the workdir.
  wd = pathlib.Path(workdir)
  ds, split, task = exp.dataset, exp.split, exp.task
  logging.info(
    "data %s: %d paired, %d unpaired, %d test; image %s; task %s; mesh %s",
    ds.name,
    len(split.paired),
    len(split.unpaired),
    len(ds.test_images),
    ds.image_shape,
    task.name,
    dict(mesh.shape),
  )
  timings = {}

  # Stage 1 on every training image we may use, paired and unpaired alike.
  t = time.perf_counter()
  stage1_images = ds.train_images[np.concatenate([split.paired, split.unpaired])]
  ae_model, ae_params, history1 = stage1.train(config, stage1_images, mesh, wd)
  timings["stage1_seconds"] = time.perf_counter() - t

  # Latents: encode once per stage-1 model.
  t = time.perf_counter()
  # Fields a rerun may change (how often to log or save...) do not call for new latents.
  stage1_fields = {k: v for k, v in config.stage1.items() if k not in OPERATIONAL_FIELDS}
  fingerprint = config_lib.fingerprint(stage1_fields) + config_lib.fingerprint(config.data)
  meta = latents.read_meta(wd / "latents")
  if meta is None or meta.get("stage1") != fingerprint:
    # Each process encodes (and reads) only the rows its devices hold.
    n_paired, n_unpaired = len(split.paired), len(split.unpaired)
    z_paired = latents.encode(ae_model, ae_params, ds.train_images, mesh, rows=split.paired)
    z_unpaired = None
    if n_unpaired:
      z_unpaired = latents.encode(ae_model, ae_params, ds.train_images, mesh, rows=split.unpaired)
    mean, std = latents.latent_stats([z_paired, z_unpaired], [n_paired, n_unpaired])
    latents.save(
      wd / "latents",
      mesh,
      x=parallel.global_rows(mesh, exp.paired_conditions, n_paired),
      z=z_paired,
      z_unpaired=z_unpaired,
      mean=mean,
      std=std,
      n_paired=n_paired,
      n_unpaired=n_unpaired,
      meta={
        "stage1": fingerprint,
        "image_shape": list(ds.image_shape),
        "num_classes": ds.num_classes,
        "latent_dim": config.stage1.latent_dim,
        "cond_kind": task.cond_kind,
      },
    )
  arrays, meta = latents.load(wd / "latents", mesh)
  timings["latents_seconds"] = time.perf_counter() - t

  # Stage 2 on the standardised paired latents.
  t = time.perf_counter()
  data = {
    "x": arrays["x"],
    "z": latents.standardise(arrays["z"], arrays["mean"], arrays["std"]),
    "z_unpaired": latents.standardise(arrays["z_unpaired"], arrays["mean"], arrays["std"]),
  }
  semi_metrics = {}
  if config.semi.enabled:
    stats = (arrays["mean"], arrays["std"])
    data, semi_metrics = semi_pairs(config, exp, data, stats, ae_model, ae_params, mesh, wd)
  decoder = None
  if config.stage2.consistency_weight > 0:
    decoder = ae_model.make_decoder()
    data = {**data, "decoder": ae_params["decoder"], "mean": arrays["mean"], "std": arrays["std"]}
  s2, params2, history2 = stage2.train(config, task, data, mesh, wd, decoder)
  timings["stage2_seconds"] = time.perf_counter() - t

  gen_params, mean, std = stage2.sampling_params(params2), arrays["mean"], arrays["std"]
  view_mesh = mesh
  if jax.process_count() > 1:
    # Process 0 alone makes the pictures and metrics, on its own devices; first every
    # process joins in copying the (small) trained parameters to every host.
    ae_params, gen_params, mean, std = parallel.to_host((ae_params, gen_params, mean, std))
    view_mesh = parallel.local_mesh()
  results = {"timings": timings, **semi_metrics}
  if parallel.is_main_process():
    lsdm = model_lib.build(
      config, task, ds.image_shape, ae_model, ae_params, s2, gen_params, mean, std, view_mesh
    )
    grids = _write_pictures(wd, exp, lsdm, ae_model, ae_params, history1, history2)
    if config.eval.enabled:
      t = time.perf_counter()
      results.update(evaluate(lsdm, exp, config))
      timings["eval_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - t_start
    tmp = wd / "metrics.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    tmp.replace(wd / "metrics.json")
    logging.info("metrics: %s", json.dumps(results, sort_keys=True))
    _write_summaries(wd / "tensorboard", config.stage2.steps, grids, results)
  return results


def semi_pairs(config, exp: Experiment, data: dict, stats, ae_model, ae_params, mesh, wd):
  """Stage 2's data with the unpaired latents as (weighted) pseudo pairs (`lsdm_jax.semi`).

  classcond: labels from the labeller on the standardised latents; its accuracy on the
  unpaired images and on the test split is measured with their true labels, which
  nothing else reads. superres: the unpaired images' exact pooled conditions.

  Returns:
    (data with 'x', 'z' extended and 'cdf', metrics as {'semi_*': value}).
  """
  from lsdm_jax import semi

  cfg, task, split, ds = config.semi, exp.task, exp.split, exp.dataset
  x, z, z_u = parallel.to_host((data["x"], data["z"], data["z_unpaired"]))
  z_u = z_u[: len(split.unpaired)]
  n_paired = len(x)
  if task.cond_kind == "label":
    t = time.perf_counter()
    probs = semi.class_probabilities(cfg, z, x, z_u, task.num_classes)
    pairs = semi.pseudo_pairs(cfg, probs, x, task.num_classes)
    truth = ds.train_labels[split.unpaired]  # Diagnostics only.
    kept = pairs.rows
    # Test split: each test latent takes the vote of its neighbours among the labelled
    # paired and pseudo-labelled unpaired latents (the labeller's inductive extension).
    z_test = latents.standardise(
      parallel.to_host(latents.encode(ae_model, ae_params, ds.test_images, mesh)),
      *parallel.to_host(stats),
    )[: len(ds.test_images)]
    vote = semi.knn_vote(
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
      np.savez(
        wd / "semi_labels.npz",
        rows=split.unpaired[kept],
        unpaired_index=kept,
        labels=pairs.labels,
        weights=pairs.weights,
        confidence=pairs.confidence,
        predicted=pairs.predicted,
      )
  else:
    new_x, new_z = exp.unpaired_conditions(), z_u
    weights = np.full(len(z_u), float(cfg.pseudo_weight), np.float32)
    metrics = {"semi_pseudo_pairs": float(len(z_u)), "semi_coverage": 1.0}
  logging.info("semi-supervised stage 2: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
  cdf = semi.sampling_cdf(np.concatenate([np.ones(n_paired, np.float32), weights]))
  out = dict(data)
  out["x"] = np.concatenate([x, np.asarray(new_x, x.dtype)])
  out["z"] = np.concatenate([z, new_z])
  out["cdf"] = cdf
  return out, metrics


def _write_pictures(wd, exp: Experiment, lsdm, ae_model, ae_params, history1, history2):
  """Writes the PNGs of `samples/` and `curves/`; returns the grids by PNG name."""
  config, ds = lsdm.config, exp.dataset
  samples = wd / "samples"
  key = jax.random.key(config.eval.seed)
  grids = {}
  if exp.task.cond_kind == "label":
    k = config.eval.grid_per_class
    labels = np.repeat(np.arange(exp.task.num_classes), k)
    images = lsdm.generate(labels, key)
    grids["grid"] = plots.save_grid(images, exp.task.num_classes, samples / "grid.png")
  else:
    grids["superres"] = _write_superres_grid(lsdm, exp, key, samples / "superres.png")
    _, inputs, _ = superres_test_inputs(exp, SPREAD_INPUTS)
    spread_key = jax.random.fold_in(jax.random.key(config.eval.seed + 1), 1)
    superres_spread(lsdm, exp, inputs, spread_key, samples / "superres_too_sure.png")
  # Stage-1 reconstructions of held-out images: top row real, bottom row E→D.
  real = to_float(ds.test_images[np.linspace(0, len(ds.test_images) - 1, 16).astype(int)])
  recon = np.asarray(lsdm.decode(lsdm.encode(real)))
  pairs = np.concatenate([real, recon])
  grids["reconstructions"] = plots.save_grid(pairs, 2, samples / "reconstructions.png")
  plots.save_curves(history1, wd / "curves" / "stage1.png", "stage 1")
  plots.save_curves(history2, wd / "curves" / "stage2.png", "stage 2")
  logging.info("wrote %s and %s", samples, wd / "curves")
  return grids


def _write_summaries(directory, step: int, grids: dict, results: dict) -> None:
  """The sample grids and the numbers of metrics.json as TensorBoard events at `step`."""
  scalars = {f"timings/{k}": v for k, v in results["timings"].items()}
  scalars.update({f"eval/{k}": v for k, v in results.items() if k != "timings"})
  with summaries.SummaryWriter(directory) as events:
    events.write_images(step, {f"samples/{name}": grid for name, grid in grids.items()})
    events.write_scalars(step, scalars)


REFERENCES = ("test", "unpaired")


def unpaired_reference(exp: Experiment) -> Dataset:
  """The data set seen from the run's unpaired images: they stand in for the test split.

  Scoring against them instead of the test split lets a user compare stage-2 settings
  without looking at the test images. The paper's stage 2 never sees them (only stage 1
  does, without labels); with `stage2.unpaired_weight > 0` G is trained towards them, so
  they are no longer held out from stage 2. The real-vs-real baselines use the paired
  images.
  """
  ds, split = exp.dataset, exp.split
  if exp.task.cond_kind != "label":
    raise DataError("reference 'unpaired' scores class-conditional runs only; use 'test'")
  if len(split.unpaired) < 10:  # Too few for a covariance or k-nearest-neighbour radii.
    raise DataError(
      f"reference 'unpaired' needs at least 10 unpaired images; this run has "
      f"{len(split.unpaired)} (data.n_unpaired): use reference 'test'"
    )
  return dataclasses.replace(
    ds,
    train_images=ds.train_images[split.paired],
    train_labels=ds.train_labels[split.paired],
    test_images=ds.train_images[split.unpaired],
    test_labels=ds.train_labels[split.unpaired],
    train_index=ds.train_index[split.paired],
    test_index=ds.train_index[split.unpaired],
  )


def evaluate(lsdm, exp: Experiment, config, reference: str = "test") -> dict[str, float]:
  """Metrics on the canonical test split (see `lsdm_jax.metrics`).

  `reference='unpaired'` scores class-conditional samples against the run's unpaired
  train images instead (`unpaired_reference`), for choosing settings without the test
  split; the bound's terms, which are about held-out data, are then left out.
  """
  from lsdm_jax.metrics import evaluate as evaluate_lib
  from lsdm_jax.metrics.classifier import load_or_train_classifier

  if reference not in REFERENCES:
    raise ConfigError(f"reference {reference!r} is not one of {REFERENCES}")
  scored = unpaired_reference(exp) if reference == "unpaired" else exp.dataset
  key = jax.random.key(config.eval.seed + 1)
  if exp.task.cond_kind == "label":
    net = load_or_train_classifier(exp.dataset)
    labels = np.repeat(np.arange(exp.task.num_classes), config.eval.num_per_class)
    images = lsdm.generate(labels, key)
    t = time.perf_counter()  # Timed again, warm: the first call included compilation.
    jax.block_until_ready(lsdm.generate(labels, key))
    elapsed = time.perf_counter() - t
    out = evaluate_lib.evaluate_classcond(images, labels, scored, net, seed=config.eval.seed)
    out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(images)
    if reference == "test":
      out.update(bound_metrics(lsdm, exp.dataset, config))
    return {k: float(v) for k, v in out.items()}
  # Super-resolution: one sample per test input, scored against its true image.
  rows, inputs, targets = superres_test_inputs(exp, config.eval.num_inputs)
  outputs = lsdm.generate(inputs, key)
  t = time.perf_counter()  # Timed warm, as for classcond.
  jax.block_until_ready(lsdm.generate(inputs, key))
  elapsed = time.perf_counter() - t
  ds = exp.dataset
  # Feature metrics need the data set's classifier; unlabelled sources get pixel ones only.
  net = load_or_train_classifier(ds) if ds.train_labels is not None and ds.num_classes > 1 else None
  out = evaluate_lib.evaluate_superres(outputs, inputs, targets, exp.task.factor, net)
  out["num_samples"] = float(len(rows))
  out["generate_seconds_per_1000"] = 1000.0 * elapsed / len(rows)
  # The decoder's ceiling: how consistent stage 1's own reconstructions of the targets are.
  from lsdm_jax.metrics.image import consistency

  recon = np.asarray(lsdm.decode(lsdm.encode(targets)))
  out["recon_consistency"] = float(np.mean(consistency(recon, inputs, exp.task.factor)))
  spread = superres_spread(lsdm, exp, inputs[:SPREAD_INPUTS], jax.random.fold_in(key, 1))
  out.update({k: v for k, v in spread.items() if isinstance(v, float)})
  return {k: float(v) for k, v in out.items()}


SPREAD_INPUTS = 200  # Test inputs the per-input spread is measured on.
SPREAD_SAMPLES = 8  # Samples per input (and nearest real train images) for the spread.


def superres_spread(lsdm, exp: Experiment, inputs: np.ndarray, key, path=None) -> dict:
  """`metrics.diversity.superres_spread` of the model's samples for `inputs`, against the
  train images (paired and unpaired) with the nearest pooled versions; with `path`, a
  picture of the 8 inputs where the model is most too sure (per column: the input, its
  samples, then the real neighbours)."""
  from lsdm_jax.metrics.diversity import superres_spread as spread_of

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


# Test images the bound's W1 terms use: Sinkhorn time grows as its square, and the estimates
# depend on it (finite-cloud W1), so runs are comparable at the same value only.
BOUND_MAX_POINTS = 500


def bound_metrics(lsdm, dataset, config) -> dict[str, float]:
  """The terms of LSDM's bound on the test split, as `bound_*` metrics.

  bound_value = bound_reconstruction + max(1, bound_lipschitz) · bound_latent_w1, with the
  W1 in standardised latent units and the Lipschitz constant in pixels per such unit;
  bound_data_w1 is the left-hand side, the joint W1 of test data and samples in pixels
  (see `lsdm_jax.metrics.bound`).
  """
  from lsdm_jax.metrics.bound import bound_terms

  terms = bound_terms(lsdm, dataset, seed=config.eval.seed, max_points=BOUND_MAX_POINTS)
  return {f"bound_{k}": v for k, v in terms.items()}


def superres_test_inputs(exp: Experiment, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The first min(num, test size) test images as (rows, low-res inputs, targets).

  `rows` index `dataset.test_images` (`dataset.test_index[rows]` are source rows); inputs
  are the targets average-pooled by the task's factor, all float32 in [0, 1].
  """
  rows = np.arange(min(int(num), len(exp.dataset.test_images)))
  targets = to_float(exp.dataset.test_images[rows])
  return rows, exp.task.condition(targets, None), targets


def _write_superres_grid(lsdm, exp: Experiment, key, path, num_inputs: int = 8, n: int = 8):
  """Columns: `num_inputs` test images spread over the split; rows: the input (nearest-
  upsampled), `n` samples, the ground truth."""
  ds, f = exp.dataset, exp.task.factor
  rows = np.linspace(0, len(ds.test_images) - 1, min(num_inputs, len(ds.test_images)))
  targets = to_float(ds.test_images[rows.astype(int)])
  inputs = exp.task.condition(targets, None)
  samples = np.asarray(lsdm.generate(inputs, key, n=n)).reshape(len(targets), n, *targets.shape[1:])
  upsampled = inputs.repeat(f, axis=1).repeat(f, axis=2)
  grid = np.concatenate([upsampled[None], samples.transpose(1, 0, 2, 3, 4), targets[None]])
  return plots.save_grid(grid.reshape(-1, *targets.shape[1:]), n + 2, path)
