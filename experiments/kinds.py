"""What each kind of study run does: `KINDS[kind](run, config, workdir, study)` → rows.

A row is one method or sampler setting of the run: its name, setting, seed, fields,
status and metrics (see `row`). Class-conditional rows are scored in the package's
feature net and in the PCA pixel features of `experiments.independent_classcond_eval`,
and timed in seconds per 1,000 decoded images after a warm-up call. The kinds:

* `lsdm`: `train_and_evaluate` (option `unpaired_reference`: also FD against the unpaired
  train images; `projections`: a superres run rescored at other `task.projection` amounts).
* `latent_diffusion`: latent diffusion on the `reference` run's standardised latents
  (`pairs='pseudo'` adds its semi-supervised pseudo pairs), DDIM at each of `ddim_steps`,
  decoded by the reference's D and timed against it; `distill_steps` adds its consistency
  distillation.
* `pixel_wgcs`, `cvae`: the pixel-space baselines on the reference run's paired set.
* `superres_baselines`: bicubic and an L2 regressor on the reference run's paired set.
* `labellers`: pseudo-label accuracy of each labeller against the share kept, on the
  reference run's latents (the unpaired images' true labels are read for this only).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import statistics
import time

import numpy as np
from absl import logging


def read_json(path):
  """The file's JSON value, or None if it is missing or unreadable."""
  try:
    return json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError):
    return None


def seconds_per_1000(fn, n: int, repeats: int) -> tuple[float, np.ndarray]:
  """Seconds per 1,000 images of `fn()` (n images on the host): the median of `repeats`
  calls after an untimed warm-up call, and the warm-up's images."""
  first = np.asarray(fn())
  times = []
  for _ in range(max(1, repeats)):
    t = time.perf_counter()
    np.asarray(fn())
    times.append(time.perf_counter() - t)
  return 1000.0 * statistics.median(times) / n, first


class Scorer:
  """Requested labels, key and feature nets of a class-conditional run's evaluation."""

  def __init__(self, config):
    import jax

    from experiments import independent_classcond_eval as independent
    from lsdm_jax import train
    from lsdm_jax.metrics.classifier import load_or_train_classifier

    self.config, self.exp, self.repeats = config, train.setup(config), 3
    k, n = self.exp.task.num_classes, config.eval.num_per_class
    self.labels = np.repeat(np.arange(k), n).astype(np.int32)
    self.key = jax.random.key(config.eval.seed + 1)
    self.net = load_or_train_classifier(self.exp.dataset)
    csv = independent.default_csv() if config.data.source == "mnist5k" else None
    self.pca = None if csv is None else (independent, independent.load_digits(csv))

  def __call__(self, generate, grid=None, ours: bool = True) -> dict:
    from lsdm_jax import plots
    from lsdm_jax.metrics.scores import evaluate_classcond

    seconds, images = seconds_per_1000(generate, len(self.labels), self.repeats)
    out = {"generate_seconds_per_1000": seconds}
    if ours:
      metrics = evaluate_classcond(
        images, self.labels, self.exp.dataset, self.net, seed=self.config.eval.seed
      )
      out.update({k: float(v) for k, v in metrics.items()})
    if self.pca is not None:
      independent, digits = self.pca
      out.update({f"pca_{k}": v for k, v in independent.score(images, self.labels, digits).items()})
    if grid is not None:
      k, g, shape = self.exp.task.num_classes, self.config.eval.grid_per_class, images.shape[1:]
      picked = images.reshape(k, -1, *shape)[:, :g].reshape(-1, *shape)
      plots.save_grid(picked, k, grid)
    return out


# --------------------------------------------------------------------------- kinds


def run_lsdm(run, config, wd, study) -> list[dict]:
  import lsdm_jax
  from lsdm_jax import train
  from lsdm_jax import workdir as workdir_lib

  for leftover in wd.glob(".copy-*"):  # A copy cut short by a crash.
    shutil.rmtree(leftover)
  source = None if (wd / "stage1").exists() else study.stage1_source(run, config)
  if source is not None:
    logging.info("%s: stage 1 and latents from %s", run.name, source.name)
    train.setup(config)  # Checks the config and data before anything is written.
    workdir_lib.prepare(wd, config)
    for part in ("stage1", "latents"):  # Each part whole or not at all.
      shutil.copytree(source / part, wd / f".copy-{part}")
      (wd / f".copy-{part}").rename(wd / part)
  train.train_and_evaluate(config, wd)
  metrics = read_json(wd / "metrics.json")
  timings = metrics.pop("timings", {})
  rows = [row(run, "", metrics, timings=timings, stage1_source=source and source.name)]
  model, exp = lsdm_jax.load(wd), None
  if config.task.name == "classcond":
    s = study.scorer(run)
    exp = s.exp
    extra = s(lambda: model.generate(s.labels, s.key), ours=False)
    rows[0]["metrics"] = {**extra, **metrics}
  if run.options.get("unpaired_reference"):  # The unpaired train images, unseen by stage 2.
    from lsdm_jax.evaluation import evaluate

    m = evaluate(model, exp or train.setup(config), config, reference="unpaired")
    rows[0]["metrics"].update(unpaired_fd=m["fd"], unpaired_fd_ratio=m.get("fd_ratio"))
  for amount in run.options.get("projections", ()):
    rows.append(row(run, f"_projection{amount:g}", _rescore_projected(model, amount)))
  return rows


def _rescore_projected(model, amount: float) -> dict:
  """A loaded run's metrics with its samples moved `amount` towards their inputs."""
  from lsdm_jax import train
  from lsdm_jax.evaluation import evaluate

  config = model.config.copy_and_resolve_references()
  config.task.projection = float(amount)
  return evaluate(dataclasses.replace(model, config=config), train.setup(config), config)


def _pairs(ref_dir, pseudo: bool):
  """(x, z, mean, std): the reference run's standardised paired latents (and pseudo pairs)."""
  from lsdm_jax import latents, parallel

  arrays, _ = latents.load(ref_dir / "latents", parallel.make_mesh(1, 1))
  mean, std = arrays["mean"], arrays["std"]
  x, z = np.asarray(arrays["x"]), np.asarray(latents.standardise(arrays["z"], mean, std))
  if pseudo:
    labels = np.load(ref_dir / "semi_labels.npz", allow_pickle=False)
    z_u = np.asarray(latents.standardise(arrays["z_unpaired"], mean, std))
    x = np.concatenate([x, labels["labels"]])
    z = np.concatenate([z, z_u[labels["unpaired_index"]]])
  return x.astype(np.int32), z, mean, std


def run_latent_diffusion(run, config, wd, study) -> list[dict]:
  import jax
  import jax.numpy as jnp

  import lsdm_jax
  from lsdm_jax import latents
  from lsdm_jax.baselines.consistency import ConsistencyModel
  from lsdm_jax.baselines.latent_diffusion import LatentDiffusion

  ref_dir = study.finished_dir(run.options["reference"])
  ref_fd = study.rows(run.options["reference"])[0]["metrics"]["fd"]
  lsdm, s = lsdm_jax.load(ref_dir), study.scorer(run)
  x, z, mean, std = _pairs(ref_dir, run.options.get("pairs") == "pseudo")
  t = time.perf_counter()
  k = s.exp.task.num_classes
  ldm, _ = LatentDiffusion.fit(
    x, z, cond_kind="label", num_classes=k, config=config.latent_diffusion, seed=run.seed
  )
  train_seconds = time.perf_counter() - t
  # The reference and the decoder alone, timed in this process like the samplers: the
  # ratio without the shared decoder is that of the latent samplers.
  ref_seconds = s(lambda: lsdm.generate(s.labels, s.key), ours=False)["generate_seconds_per_1000"]
  z_any = latents.unstandardise(jax.random.normal(s.key, (len(s.labels), z.shape[1])), mean, std)
  decode_seconds, _ = seconds_per_1000(lambda: lsdm.decode(z_any), len(s.labels), s.repeats)
  decode = lambda zs: lsdm.decode(latents.unstandardise(zs, mean, std))  # noqa: E731
  x_eval, rows = jnp.asarray(s.labels), []
  for n in run.options["ddim_steps"]:
    m = s(lambda n=n: decode(ldm.sample(x_eval, s.key, num_steps=n)), wd / f"ddim{n}.png")
    own = ref_seconds - decode_seconds
    m.update(
      reference_fd=ref_fd,
      reference_generate_seconds_per_1000=ref_seconds,
      decode_seconds_per_1000=decode_seconds,
      speed_ratio=m["generate_seconds_per_1000"] / ref_seconds,
      latent_speed_ratio=(m["generate_seconds_per_1000"] - decode_seconds) / own
      if own > 0
      else None,
    )
    rows.append(row(run, f"_ddim{n}", m, timings={"train_seconds": train_seconds}, ddim_steps=n))
  closest = min(rows, key=lambda r: (abs(r["metrics"]["fd"] - ref_fd), r["ddim_steps"]))
  closest["closest_to_reference_fd"] = True
  if run.options.get("distill_steps"):
    t = time.perf_counter()
    cm, _ = ConsistencyModel.distill(ldm, x, z, config=config.consistency, seed=run.seed)
    seconds = time.perf_counter() - t + train_seconds  # The teacher's training included.
    for n in run.options["distill_steps"]:
      m = s(lambda n=n: decode(cm.sample(x_eval, s.key, num_steps=n)), wd / f"cd{n}.png")
      rows.append(row(run, f"_cd{n}", m, timings={"train_seconds": seconds}))
  return rows


def run_pixel(run, config, wd, study) -> list[dict]:
  """A pixel-space baseline (`pixel_wgcs` or `cvae`) on the reference run's paired set."""
  from lsdm_jax.baselines.cvae import ConditionalVAE
  from lsdm_jax.baselines.pixel_wgcs import PixelWGCS
  from lsdm_jax.data.sources import to_float

  fit = {"pixel_wgcs": PixelWGCS.fit, "cvae": ConditionalVAE.fit}[run.kind]
  s = study.scorer(run)
  ds, paired = s.exp.dataset, s.exp.split.paired
  t = time.perf_counter()
  model, _ = fit(
    ds.train_labels[paired],
    to_float(ds.train_images[paired]),
    num_classes=s.exp.task.num_classes,
    config=config[run.kind],
    seed=run.seed,
  )
  timings = {"train_seconds": time.perf_counter() - t}
  return [
    row(run, "", s(lambda: model.generate(s.labels, s.key), wd / "grid.png"), timings=timings)
  ]


def run_superres_baselines(run, config, wd, study) -> list[dict]:
  from lsdm_jax import train
  from lsdm_jax.baselines import superres
  from lsdm_jax.data.sources import to_float
  from lsdm_jax.metrics.classifier import load_or_train_classifier

  exp = train.setup(config)
  _, test_x, test_y = exp.test_inputs(config.eval.num_inputs)
  base = superres.evaluate_baselines(
    exp.paired_conditions(),
    to_float(exp.dataset.train_images[exp.split.paired]),
    test_x,
    test_y,
    exp.task.factor,
    load_or_train_classifier(exp.dataset),
    config=config.superres_regressor,
    seed=config.seed,
  )
  spread_real = study.rows(run.options["reference"])[0]["metrics"].get("spread_real")
  # Deterministic: every sample of an input is the same image.
  return [
    row(run, f"_{k}", {**m, "spread": 0.0, "spread_real": spread_real}) for k, m in base.items()
  ]


def run_labellers(run, config, wd, study) -> list[dict]:
  from lsdm_jax import latents, parallel, plots, semi, train

  exp = train.setup(config)
  arrays, _ = latents.load(
    study.finished_dir(run.options["reference"]) / "latents", parallel.make_mesh(1, 1)
  )
  std = lambda a: np.asarray(latents.standardise(a, arrays["mean"], arrays["std"]))  # noqa: E731
  z, z_u = std(arrays["z"]), std(arrays["z_unpaired"])[: len(exp.split.unpaired)]
  truth, rows, curves = exp.dataset.train_labels[exp.split.unpaired], [], {}
  for name in semi.LABELLERS:
    cfg = config.semi.copy_and_resolve_references()
    cfg.labeller = name
    probs = np.asarray(
      semi.class_probabilities(cfg, z, np.asarray(arrays["x"]), z_u, exp.task.num_classes)
    )
    pred, conf = probs.argmax(1), probs.max(1)
    order = np.argsort(-conf)
    curves[name] = np.cumsum(pred[order] == truth[order]) / np.arange(1, len(order) + 1)
    m = {"label_accuracy": float(np.mean(pred == truth))}
    for t in (0.5, 0.7, 0.9):
      kept = conf >= t
      m[f"label_accuracy_t{t}"] = float(np.mean(pred[kept] == truth[kept])) if kept.any() else None
      m[f"kept_t{t}"] = float(kept.mean())
    rows.append(row(run, f"_{name}", m))
  lines = {n: (np.arange(1, len(c) + 1) / len(c), c) for n, c in curves.items()}
  kept = "share of unpaired latents kept (most confident first)"
  plots.save_lines(lines, study.out / "labellers.png", kept, "pseudo-label accuracy")
  return rows


def row(run, suffix: str, metrics: dict, **extra) -> dict:
  return {
    "name": run.name + suffix,
    "run": run.name,
    "setting": run.setting + suffix,
    "kind": run.kind,
    "variant": run.options.get("variant"),
    "seed": run.seed,
    "fields": run.fields,
    "compare": run.options.get("compare") and run.options["compare"] + suffix,
    "status": "ok",
    "metrics": metrics,
    **extra,
  }


KINDS = {
  "lsdm": run_lsdm,
  "latent_diffusion": run_latent_diffusion,
  "superres_baselines": run_superres_baselines,
  "labellers": run_labellers,
  "pixel_wgcs": run_pixel,
  "cvae": run_pixel,
}
