"""`train_and_evaluate(config, workdir)`: the whole LSDM pipeline, stage by stage.

data → stage 1 (E, D on paired ∪ unpaired) → latents (Orbax) → stage 2 (G on paired
latents) → sample grids → metrics.json. Each stage reads only what the previous one
wrote to the workdir, resumes from its checkpoints, and is skipped once finished.

This module only orders the stages: the metrics and the evaluation pictures are
`lsdm_jax.metrics.evaluate`'s, the semi-supervised pseudo pairs `lsdm_jax.semi`'s.
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
from lsdm_jax import latents, parallel, plots, semi, stage1, stage2, summaries
from lsdm_jax import model as model_lib
from lsdm_jax import workdir as workdir_lib
from lsdm_jax.data import Dataset, PairedSplit, Task, load_source, make_task, paired_unpaired_split
from lsdm_jax.data.pipeline import take
from lsdm_jax.data.sources import to_float
from lsdm_jax.errors import ConfigError, DataError
from lsdm_jax.loop import OPERATIONAL_FIELDS
from lsdm_jax.metrics import evaluate as evaluation


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
    attributes = None if ds.train_attributes is None else ds.train_attributes[idx]
    return self.task.condition(images, labels, attributes)

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
  )
  _check_training(config, ds, task, split)
  return Experiment(ds, task, split)


def _check_training(config, ds: Dataset, task: Task, split: PairedSplit) -> None:
  """Checks what the stages would otherwise find only after the workdir is written."""
  from lsdm_jax.loop import LoopConfig
  from lsdm_jax.models import resnet
  from lsdm_jax.models.autoencoder import check_image_shape

  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  for name in ("stage1", "stage2"):
    LoopConfig.from_config(name, config[name]).validate(name)
    parallel.check_batch_size(config[name].batch_size, mesh, f"{name}.batch_size")
  if config.stage1.arch == "conv":
    check_image_shape(ds.image_shape, len(config.stage1.features))
  else:
    resnet.check_image_shape(ds.image_shape, config.stage1.ch_mult)
  weights = config.eval.inception_weights
  if config.eval.enabled and weights and not pathlib.Path(weights).is_file():
    raise DataError(
      f"eval.inception_weights={weights!r} does not exist: pass the pytorch-fid Inception "
      "weights as .npz (lsdm_jax/metrics/inception.py says how), or '' to skip FID"
    )
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
  # A view when streaming: stage 1 reads only the rows of its batches.
  stage1_images = take(ds.train_images, np.concatenate([split.paired, split.unpaired]))
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
        "latent_dim": ae_model.latent_dim,
        "latent_shape": list(getattr(ae_model, "latent_shape", (ae_model.latent_dim,))),
        "cond_kind": task.cond_kind,
        "attribute_names": list(ds.attribute_names),
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
    data, semi_metrics = semi.stage2_data(config, exp, data, stats, ae_model, ae_params, mesh, wd)
  decoder = None
  if config.stage2.consistency_weight > 0:
    decoder = ae_model.make_decoder()
    data = {**data, "decoder": ae_params["decoder"], "mean": arrays["mean"], "std": arrays["std"]}
  latent_shape = tuple(meta.get("latent_shape", (meta["latent_dim"],)))
  s2, params2, history2 = stage2.train(config, task, data, mesh, wd, decoder, latent_shape)
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
      results.update(evaluation.evaluate(lsdm, exp, config))
      timings["eval_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - t_start
    workdir_lib.write_json(wd / "metrics.json", results)
    logging.info("metrics: %s", json.dumps(results, sort_keys=True))
    _write_summaries(wd / "tensorboard", config.stage2.steps, grids, results)
  return results


def _write_pictures(wd, exp: Experiment, lsdm, ae_model, ae_params, history1, history2):
  """Writes the PNGs of `samples/` and `curves/`; returns the grids by PNG name."""
  config, ds = lsdm.config, exp.dataset
  samples = wd / "samples"
  key = jax.random.key(config.eval.seed)
  grids = {}
  if exp.task.cond_kind == "attributes":
    grids["grid"] = evaluation.write_attributes_grid(lsdm, exp, key, samples / "grid.png")
  elif exp.task.cond_kind == "label":
    k = config.eval.grid_per_class
    labels = np.repeat(np.arange(exp.task.num_classes), k)
    images = lsdm.generate(labels, key)
    grids["grid"] = plots.save_grid(images, exp.task.num_classes, samples / "grid.png")
  else:
    grids["superres"] = evaluation.write_superres_grid(lsdm, exp, key, samples / "superres.png")
    _, inputs, _ = evaluation.superres_test_inputs(exp, evaluation.SPREAD_INPUTS)
    spread_key = jax.random.fold_in(jax.random.key(config.eval.seed + 1), 1)
    evaluation.superres_spread(lsdm, exp, inputs, spread_key, samples / "superres_too_sure.png")
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
