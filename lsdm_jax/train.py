"""`train_and_evaluate(config, workdir)`: the whole LSDM pipeline, stage by stage.

data → stage 1 (E, D on paired ∪ unpaired) → latents (Orbax) → (semi-supervised pseudo
pairs) → stage 2 (G on paired latents) → the model → evaluation (metrics.json, pictures).
Each stage reads only what the previous one wrote to the workdir, resumes from its
checkpoints, and is skipped once finished.

This module only orders the stages and checks the config once for all of them
(`check_config`); each stage's work is its own module's.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from lsdm_jax import config as config_lib
from lsdm_jax import evaluation, latents, parallel, semi, stage1, stage2, summaries
from lsdm_jax import model as model_lib
from lsdm_jax import workdir as workdir_lib
from lsdm_jax.data import pipeline, tasks
from lsdm_jax.data.experiment import Experiment, load_experiment
from lsdm_jax.data.images import take

# Every component's config checks, in the pipeline's order; a rule that spans sections is
# the later component's.
CHECKS = (
  config_lib.validate,  # The schema: types, derived fields (`resolve`), ranges.
  pipeline.check_config,
  tasks.check_config,
  stage1.check_config,
  semi.check_config,
  stage2.check_config,
  evaluation.check_config,
)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Runs every component's checks once (the first, `config.validate`, also resolves the
  learning rates of their scaling rules); raises ConfigError naming the first bad field."""
  for check in CHECKS:
    check(config)


def setup(config: ml_collections.ConfigDict) -> Experiment:
  """Checks the config, loads the data and checks that the models fit it (fails before
  touching the workdir)."""
  check_config(config)
  exp = load_experiment(config)
  stage1.check_image_shape(config.stage1, exp.dataset.image_shape)
  return exp


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

  # Latents: encoded once per stage-1 model.
  t = time.perf_counter()
  arrays, meta = latents.encode_run(config, exp, ae_model, ae_params, mesh, wd / "latents")
  timings["latents_seconds"] = time.perf_counter() - t

  # Stage 2 on the standardised paired latents (and, semi-supervised, pseudo pairs).
  t = time.perf_counter()
  mean, std = arrays["mean"], arrays["std"]
  data = {k: latents.standardise(arrays[k], mean, std) for k in ("z", "z_unpaired")}
  data["x"] = arrays["x"]
  semi_metrics = {}
  if config.semi.enabled:
    data, semi_metrics = semi.stage2_data(
      config, exp, data, (mean, std), ae_model, ae_params, mesh, wd
    )
  decoder = None
  if config.stage2.consistency_weight > 0:
    decoder = ae_model.make_decoder()
    data = {**data, "decoder": ae_params["decoder"], "mean": mean, "std": std}
  latent_shape = tuple(meta.get("latent_shape", (meta["latent_dim"],)))
  s2, params2, history2 = stage2.train(config, task, data, mesh, wd, decoder, latent_shape)
  timings["stage2_seconds"] = time.perf_counter() - t

  # The model: y = D(G(η, x)).
  gen_params = stage2.sampling_params(params2)
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
    # Evaluation: pictures, then metrics on the held-out test split.
    histories = {"stage1": history1, "stage2": history2}
    grids = evaluation.write_pictures(wd, exp, lsdm, histories)
    if config.eval.enabled:
      t = time.perf_counter()
      results.update(evaluation.evaluate(lsdm, exp, config))
      timings["eval_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - t_start
    workdir_lib.write_json(wd / "metrics.json", results)
    logging.info("metrics: %s", json.dumps(results, sort_keys=True))
    _write_summaries(wd / "tensorboard", config.stage2.steps, grids, results)
  return results


def _write_summaries(directory, step: int, grids: dict, results: dict) -> None:
  """The sample grids and the numbers of metrics.json as TensorBoard events at `step`."""
  scalars = {f"timings/{k}": v for k, v in results["timings"].items()}
  scalars.update({f"eval/{k}": v for k, v in results.items() if k != "timings"})
  with summaries.SummaryWriter(directory) as events:
    events.write_images(step, {f"samples/{name}": grid for name, grid in grids.items()})
    events.write_scalars(step, scalars)
