"""The jobs of `experiments.sweep`: LSDM runs (reusing a stage 1 where one exists) and baselines.

Each runner `(job, settings, out)` works in `OUT/runs/<job.name>/` and writes its
`metrics.json` last, when everything else is in place; `job_rows` reads a job's result
rows back from that directory (or says it failed, with `failed.json`'s error, or is
pending).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import statistics
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from experiments.sweep_plan import (
  Job,
  Settings,
  extension_jobs,
  grid_jobs,
  lsdm_config,
  reference_job,
  run_dir,
  stage1_key,
)


def write_json(path: pathlib.Path, value) -> None:
  """Writes JSON atomically (a killed sweep leaves the old file or the new one)."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
  tmp.replace(path)


def read_json(path: pathlib.Path):
  """The file's JSON value, or None if it is missing or unreadable."""
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


# --------------------------------------------------------------------------- rows


def base_row(job: Job, s: Settings, **fields) -> dict:
  """A result row of `job` with every key of the schema; `fields` override the defaults.

  n_unpaired is the number of unpaired images the method used (0 for the pixel-space
  baselines; for latent diffusion, those of the stage 1 whose latent space it uses).
  """
  row = {
    "name": job.name,
    "job": job.name,
    "method": job.kind,
    "group": job.group,
    "status": "ok",
    "error": None,
    "estimator": job.estimator or None,
    "n_paired": job.n_paired,
    "n_unpaired": job.n_unpaired if job.kind in ("lsdm", "latent_diffusion") else 0,
    "unpaired_weight": job.unpaired_weight if job.kind == "lsdm" else None,
    "seed": job.seed,
    "ddim_steps": None,
    "stage1_source": None,
    "reference_run": None,
    "closest_to_reference_fd": None,
    "workdir": f"runs/{job.name}",
    "metrics": {},
    "timings": {},
    "config": {},
  }
  row.update(fields)
  return row


def job_rows(job: Job, s: Settings, out: pathlib.Path) -> list[dict]:
  """The result rows of a job from its directory: finished, failed or pending."""
  d = run_dir(out, job.name)
  saved = read_json(d / "metrics.json")
  if saved is not None:
    if job.kind != "lsdm":
      return saved["rows"]
    sweep_meta = read_json(d / "sweep.json") or {}
    return [
      base_row(
        job,
        s,
        metrics={k: v for k, v in saved.items() if k != "timings"},
        timings=saved.get("timings", {}),
        config=read_json(d / "config.json") or {},
        stage1_source=sweep_meta.get("stage1_source"),
      )
    ]
  failure = read_json(d / "failed.json")
  status, error = ("failed", failure["error"]) if failure else ("pending", None)
  if job.kind == "latent_diffusion":
    return [
      base_row(job, s, name=f"{job.name}_ddim{n}", ddim_steps=n, status=status, error=error)
      for n in s.ddim_steps
    ]
  return [base_row(job, s, status=status, error=error)]


# --------------------------------------------------------------------------- LSDM runs


def run_lsdm(job: Job, s: Settings, out: pathlib.Path) -> None:
  """`train_and_evaluate` in the job's directory, starting from a finished run's stage 1
  and latents when one with the same `stage1_key` exists."""
  from lsdm_jax import train
  from lsdm_jax import workdir as workdir_lib

  config = lsdm_config(job, s)
  wd = run_dir(out, job.name)
  for leftover in wd.glob(".copy-*"):  # A copy cut short by a crash.
    shutil.rmtree(leftover)
  if not (wd / "stage1").exists():
    source = _stage1_source(job, s, out, stage1_key(config))
    if source is not None:
      logging.info("%s: stage 1 and latents from %s", job.name, source.name)
      train.setup(config)  # Checks the config and data before anything is written.
      workdir_lib.prepare(wd, config)  # config.json first: train_and_evaluate then resumes.
      write_json(wd / "sweep.json", {"stage1_source": source.name})
      copy_stage1(source, wd)
  train.train_and_evaluate(config, wd)


def copy_stage1(source: pathlib.Path, wd: pathlib.Path) -> None:
  """Copies a finished run's stage 1 and latents into `wd`, each part whole or not at all
  (copied beside it, then renamed), so that `train_and_evaluate` there skips them."""
  for part in ("stage1", "latents"):
    tmp = wd / f".copy-{part}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source / part, tmp)
    tmp.rename(wd / part)


def _stage1_source(job: Job, s: Settings, out: pathlib.Path, key: str) -> pathlib.Path | None:
  """A planned LSDM run with the same stage-1 key whose latents exist (so its stage 1 is
  finished: latents are written, atomically, only after it)."""
  for other in grid_jobs(s) + extension_jobs(s):
    d = run_dir(out, other.name)
    if other == job or not (d / "latents" / "meta" / "metadata").exists():
      continue
    saved = read_json(d / "config.json")
    if saved is not None and stage1_key(saved) == key and (d / "stage1").is_dir():
      return d
  return None


# --------------------------------------------------------------------------- baselines


def seconds_per_1000(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, object]:
  """Seconds per 1,000 images of `fn()` (which makes n images), and its warm-up output.

  The first call compiles and is not timed; then the median of `repeats` calls, each
  waited for with `block_until_ready`. Every method's `fn` returns its images on the host
  (decoded, in [0, 1]), so all of them pay the same device-to-host copy.
  """
  import jax

  first = jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, repeats)):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return 1000.0 * statistics.median(times) / n, first


def latent_ratio(seconds: float, reference_seconds: float, decode_seconds: float):
  """(seconds - decode) / (reference - decode): the speed ratio without the shared decoder.

  None when the reference is not measurably slower than decoding alone (timing noise).
  """
  own = reference_seconds - decode_seconds
  return (seconds - decode_seconds) / own if own > 0 else None


def closest_step_count(fds: dict[int, float], reference_fd: float) -> int:
  """The step count whose FD is closest to the reference's (ties: fewer steps)."""
  return min(sorted(fds), key=lambda n: abs(fds[n] - reference_fd))


def _evaluation_inputs(config, exp):
  """Requested labels, generation key and feature net, as `train.evaluate` uses them."""
  import jax

  from lsdm_jax.metrics.classifier import load_or_train_classifier

  labels = np.repeat(np.arange(exp.task.num_classes), config.eval.num_per_class).astype(np.int32)
  return labels, jax.random.key(config.eval.seed + 1), load_or_train_classifier(exp.dataset)


def _score(images, labels, config, exp, net) -> dict[str, float]:
  from lsdm_jax.metrics.evaluate import evaluate_classcond

  out = evaluate_classcond(np.asarray(images), labels, exp.dataset, net, seed=config.eval.seed)
  return {k: float(v) for k, v in out.items()}


def _save_samples(images, config, exp, path: pathlib.Path) -> None:
  from lsdm_jax import plots

  k, n, g = exp.task.num_classes, config.eval.num_per_class, config.eval.grid_per_class
  images = np.asarray(images).reshape(k, n, *exp.dataset.image_shape)[:, : min(g, n)]
  plots.save_grid(images.reshape(-1, *exp.dataset.image_shape), k, path)


def _paired_set(job: Job, s: Settings):
  """The config and data of the LSDM run a baseline job is compared with (same split)."""
  from lsdm_jax import train

  config = lsdm_config(reference_job(job, s), s)
  return config, train.setup(config)


def run_latent_diffusion(job: Job, s: Settings, out: pathlib.Path) -> None:
  """Latent diffusion on the reference run's standardised paired latents, decoded by its D."""
  import jax
  import jax.numpy as jnp

  import lsdm_jax
  from lsdm_jax import latents, parallel
  from lsdm_jax.baselines.latent_diffusion import DiffusionConfig, LatentDiffusion

  ref = reference_job(job, s)
  ref_dir = run_dir(out, ref.name)
  if not (ref_dir / "metrics.json").exists():
    raise RuntimeError(f"LSDM run {ref.name} has no metrics.json (it failed or did not run)")
  config, exp = _paired_set(job, s)
  lsdm = lsdm_jax.load(ref_dir)
  arrays, _ = latents.load(ref_dir / "latents", parallel.make_mesh(1, 1))
  mean, std = arrays["mean"], arrays["std"]
  x = np.asarray(arrays["x"])
  z = np.asarray(latents.standardise(arrays["z"], mean, std))
  cfg = DiffusionConfig(**s.diffusion)
  t = time.perf_counter()
  ldm, _ = LatentDiffusion.fit(
    x, z, cond_kind="label", num_classes=exp.task.num_classes, config=cfg, seed=job.seed
  )
  train_seconds = time.perf_counter() - t
  labels, key, net = _evaluation_inputs(config, exp)
  ref_fd = float(read_json(ref_dir / "metrics.json")["fd"])
  # LSDM timed here too: the same process, helper and load as the diffusion samplers.
  lsdm_seconds, _ = seconds_per_1000(
    lambda: lsdm.generate(labels, key), len(labels), s.timing_repeats
  )
  # The decoder alone on a batch of the same size: both methods run it once per image, so
  # taking its time off both gives the ratio of the latent samplers (G against DDIM).
  z_any = latents.unstandardise(jax.random.normal(key, (len(labels), z.shape[1])), mean, std)
  decode_seconds, _ = seconds_per_1000(
    lambda: np.asarray(lsdm.decode(z_any)), len(labels), s.timing_repeats
  )
  x_eval = jnp.asarray(labels)
  results = {}
  for n in s.ddim_steps:
    t = time.perf_counter()

    def generate(n=n):
      zs = ldm.sample(x_eval, key, num_steps=n, sampler="ddim")
      # On the host, as every other method's `generate` returns its images.
      return np.asarray(lsdm.decode(latents.unstandardise(zs, mean, std)))

    seconds, images = seconds_per_1000(generate, len(labels), s.timing_repeats)
    metrics = _score(images, labels, config, exp, net)
    _save_samples(images, config, exp, run_dir(out, job.name) / f"samples_ddim{n}.png")
    results[n] = (seconds, metrics, time.perf_counter() - t)
  closest = closest_step_count({n: r[1]["fd"] for n, r in results.items()}, ref_fd)
  rows = []
  for n, (seconds, metrics, eval_seconds) in results.items():
    metrics.update(
      generate_seconds_per_1000=seconds,
      reference_generate_seconds_per_1000=lsdm_seconds,
      reference_fd=ref_fd,
      speed_ratio=seconds / lsdm_seconds,
      decode_seconds_per_1000=decode_seconds,
      latent_speed_ratio=latent_ratio(seconds, lsdm_seconds, decode_seconds),
    )
    rows.append(
      base_row(
        job,
        s,
        name=f"{job.name}_ddim{n}",
        ddim_steps=n,
        reference_run=ref.name,
        closest_to_reference_fd=n == closest,
        metrics=metrics,
        timings={"train_seconds": train_seconds, "eval_seconds": eval_seconds},
        config={"diffusion": dataclasses.asdict(cfg), "sampler": "ddim", "data": config.data},
      )
    )
  write_json(run_dir(out, job.name) / "metrics.json", {"rows": _jsonable(rows)})


def _run_pixel_baseline(job: Job, s: Settings, out: pathlib.Path, fit, cfg) -> None:
  """Trains a pixel-space baseline on the reference run's paired set, scores and times it."""
  from lsdm_jax.data.sources import to_float

  config, exp = _paired_set(job, s)
  rows = exp.split.paired
  t = time.perf_counter()
  model, _ = fit(
    exp.dataset.train_labels[rows],
    to_float(exp.dataset.train_images[rows]),
    num_classes=exp.task.num_classes,
    config=cfg,
    seed=job.seed,
  )
  train_seconds = time.perf_counter() - t
  labels, key, net = _evaluation_inputs(config, exp)
  t = time.perf_counter()
  seconds, images = seconds_per_1000(
    lambda: model.generate(labels, key), len(labels), s.timing_repeats
  )
  metrics = _score(images, labels, config, exp, net)
  metrics["generate_seconds_per_1000"] = seconds
  _save_samples(images, config, exp, run_dir(out, job.name) / "samples.png")
  row = base_row(
    job,
    s,
    metrics=metrics,
    timings={"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t},
    config={job.kind: dataclasses.asdict(cfg), "data": config.data},
  )
  write_json(run_dir(out, job.name) / "metrics.json", {"rows": _jsonable([row])})


def run_pixel_wgcs(job: Job, s: Settings, out: pathlib.Path) -> None:
  from lsdm_jax.baselines.pixel_wgcs import PixelWGCS, PixelWGCSConfig

  _run_pixel_baseline(job, s, out, PixelWGCS.fit, PixelWGCSConfig(**s.pixel_wgcs))


def run_cvae(job: Job, s: Settings, out: pathlib.Path) -> None:
  from lsdm_jax.baselines.cvae import ConditionalVAE, CVAEConfig

  _run_pixel_baseline(job, s, out, ConditionalVAE.fit, CVAEConfig(**s.cvae))


def _jsonable(value):
  """ConfigDicts, tuples and numpy scalars as plain JSON values."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


RUNNERS = {
  "lsdm": run_lsdm,
  "latent_diffusion": run_latent_diffusion,
  "pixel_wgcs": run_pixel_wgcs,
  "cvae": run_cvae,
}
