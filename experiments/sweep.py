"""The experiment of "unpaired data and baselines": LSDM against unpaired data and baselines.

    python -m experiments.sweep --out=runs/sweep            # the full sweep (library defaults)
    python -m experiments.sweep --out=runs/sweep_quick --quick
    python -m experiments.sweep --out=runs/sweep --list     # the planned runs and a time estimate
    python -m experiments.sweep --out=runs/sweep --only='p500_s0$'   # a part of it, by job name
    python -m experiments.sweep --out=runs/sweep_long --set=stage2.steps=20000 \
        --diffusion_set=steps=4000                          # other settings, in another --out

Jobs, each in its own directory `OUT/runs/<name>/`:

* LSDM grid: class-conditional `mnist5k` (`experiments/configs/mnist5k_classcond.py`) for
  every n_paired x n_unpaired x seed x estimator, with `seed` and `data.split_seed` both set
  to the seed; `lsdm_jax.train_and_evaluate` trains and evaluates each run.
* Extension runs (`extension_jobs`): the same with the marginal-matching term
  (`stage2.unpaired_weight > 0`, beyond the paper) for n_unpaired > 0, compared in the
  report with the paper's method (weight 0) at the same seeds.
* Baselines at `baseline_n_paired`, same seeds and paired sets: latent diffusion in the
  stage-1 latent space of the LSDM run with the largest n_unpaired (its standardised paired
  latents; DDIM at each of `ddim_steps`, decoded by that run's D), the pixel-space
  conditional Wasserstein generator, and the supervised-only conditional VAE.

Every method is scored by `evaluate_classcond` on the canonical test split with
`eval.num_per_class` samples per class, as `train.evaluate` scores LSDM, and timed
(seconds per 1,000 images, decoding included, after a warm-up call, `block_until_ready`).
The latent-diffusion job also times the LSDM run whose latents it uses, in the same
process with the same helper: their ratio at the DDIM step count whose FD is closest to
LSDM's is the speed-up of one-step generation.

Stage 1 and the latents depend only on (seed, data, stage-1 config): a run whose key
matches a finished run's starts from a copy of that run's `stage1/` and `latents/`
(`train_and_evaluate` then skips both). A rerun skips every job whose `metrics.json`
exists and resumes the others; a job that fails is recorded with its one-line error and
the sweep goes on. Outputs: `results.jsonl` (one row per run and method), `sweep.md`,
`fd_vs_unpaired.png` and `precision_vs_unpaired.png`.

The plan (settings, jobs, configs, time estimates) is `experiments.sweep_plan`, the jobs
`experiments.sweep_jobs`, the tables and plots `experiments.sweep_report`; this module runs
them in order and is the command line.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time

from absl import app, flags, logging

from experiments import sweep_jobs, sweep_report
from experiments.sweep_plan import (
  Settings,
  estimates,
  format_plan,
  full_settings,
  plan,
  quick_settings,
  run_dir,
  tiny_settings,
  with_sets,
)
from lsdm_jax import cli
from lsdm_jax.loop import format_duration

FLAGS = flags.FLAGS


def selected(s: Settings, only: str | None) -> set[str]:
  """Names of the jobs of `plan(s)` that `only` (a regular expression, `re.search`) picks;
  all of them when `only` is None. Raises re.error for an invalid expression."""
  pattern = None if only is None else re.compile(only)
  return {j.name for j in plan(s) if pattern is None or pattern.search(j.name)}


def run_sweep(s: Settings, out: str | os.PathLike, only: str | None = None) -> str:
  """Runs (or resumes) every job of `plan(s)` and writes the results; returns the markdown.

  Jobs whose `metrics.json` exists are skipped; a failing job is recorded in its
  `failed.json` (and retried by the next sweep) while the others go on. With `only` (a
  regular expression), only the jobs whose name it matches (`re.search`) run; the report
  covers every finished job. A latent-diffusion job needs its LSDM run finished or selected.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  jobs = plan(s)
  est = estimates(s)
  chosen = selected(s, only)
  counts = {"run": 0, "skipped": 0, "failed": 0, "not selected": 0}
  for i, job in enumerate(jobs, 1):
    d = run_dir(out, job.name)
    if job.name not in chosen:
      counts["not selected"] += 1
      continue
    if (d / "metrics.json").exists():
      counts["skipped"] += 1
      logging.info("[%d/%d] %s: finished earlier; skipping", i, len(jobs), job.name)
      continue
    logging.info(
      "[%d/%d] %s (estimated %s)", i, len(jobs), job.name, format_duration(est[job.name])
    )
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    try:
      sweep_jobs.RUNNERS[job.kind](job, s, out)
    except Exception as e:  # noqa: BLE001 - one failed job must not stop the sweep.
      error = cli.one_line(f"{type(e).__name__}: {e}")
      logging.error("%s failed: %s", job.name, error)
      sweep_jobs.write_json(d / "failed.json", {"error": error, "seconds": time.perf_counter() - t})
      counts["failed"] += 1
    else:
      (d / "failed.json").unlink(missing_ok=True)
      counts["run"] += 1
      logging.info("%s finished in %s", job.name, format_duration(time.perf_counter() - t))
    write_results(s, out)
  rows = write_results(s, out)
  markdown = sweep_report.markdown(rows, title=f"Sweep `{s.name}`: unpaired data and baselines")
  (out / "sweep.md").write_text(markdown)
  sweep_report.save_plots(rows, out)
  logging.info(
    "sweep: %d job(s) run, %d skipped (finished earlier), %d failed, %d not selected by --only",
    counts["run"],
    counts["skipped"],
    counts["failed"],
    counts["not selected"],
  )
  return markdown


def write_results(s: Settings, out: pathlib.Path) -> list[dict]:
  """Rewrites `results.jsonl` from the job directories; returns its rows."""
  rows = [row for job in plan(s) for row in sweep_jobs.job_rows(job, s, out)]
  tmp = out / "results.jsonl.tmp"
  tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
  tmp.replace(out / "results.jsonl")
  return rows


# --------------------------------------------------------------------------- command line


def _define_flags():
  """Flags are defined only when run as a script, so that tests may import the module."""
  flags.DEFINE_string("out", None, "Output directory (runs/, results.jsonl, sweep.md, PNGs).")
  flags.DEFINE_bool("quick", False, "The smaller sweep (< 20 min on 2 idle cores).")
  flags.DEFINE_bool("tiny", False, "Seconds-long settings for the tests; numbers mean nothing.")
  flags.DEFINE_bool("list", False, "Print the planned jobs and the time estimate; run nothing.")
  flags.DEFINE_alias("dry_run", "list")
  flags.DEFINE_string(
    "only", None, "Run only the jobs whose name matches this regular expression (re.search)."
  )
  flags.DEFINE_multi_string(
    "set",
    [],
    "KEY=VALUE: a config field set in every LSDM run (e.g. stage2.steps=20000); repeatable. "
    "Job names do not show it: use another --out.",
  )
  flags.DEFINE_multi_string(
    "diffusion_set",
    [],
    "KEY=VALUE: a DiffusionConfig field of the latent-diffusion baseline (e.g. steps=4000); "
    "repeatable.",
  )
  flags.DEFINE_bool(
    "compilation_cache",
    True,
    "Keep compiled XLA programs in OUT/jax_cache: later runs and reruns that compile the "
    "same programs load them. Ignored if JAX_COMPILATION_CACHE_DIR is set.",
  )
  flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  if FLAGS.quick and FLAGS.tiny:
    cli.fail("--quick and --tiny exclude each other")
  cli.quiet_library_logs()
  settings = tiny_settings() if FLAGS.tiny else quick_settings() if FLAGS.quick else full_settings()
  try:
    settings = with_sets(settings, FLAGS.set, FLAGS.diffusion_set)
  except ValueError as e:
    cli.fail(str(e))
  out = pathlib.Path(FLAGS.out)
  if FLAGS.only is not None:
    try:
      chosen = selected(settings, FLAGS.only)
    except re.error as e:
      cli.fail(f"--only={FLAGS.only!r} is not a regular expression ({e})")
    if not chosen:
      cli.fail(f"--only={FLAGS.only!r} matches none of the {settings.name} sweep's jobs (--list)")
  if FLAGS.list:
    print(format_plan(settings, out))
    return
  import jax

  if FLAGS.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str((out / "jax_cache").absolute()))
  logging.info("JAX %s, devices: %s", jax.__version__, jax.devices())
  logging.info("%s", format_plan(settings, out))
  print(cli.run_guarded(run_sweep, settings, out, FLAGS.only), end="")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
