"""The plan of `experiments.sweep`: its settings, its jobs, their configs and time estimates.

`plan(settings)` lists every job; `lsdm_config(job, settings)` is an LSDM run's config
(`mnist5k_classcond.get_config(estimator)` with the job's fields and the settings'
overrides); `stage1_key` says which runs can share a stage 1; `format_plan` is what
`python -m experiments.sweep --list` prints.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

from experiments.configs import mnist5k_classcond
from lsdm_jax import config as config_lib
from lsdm_jax.errors import ConfigError
from lsdm_jax.loop import OPERATIONAL_FIELDS, format_duration

KINDS = ("lsdm", "latent_diffusion", "pixel_wgcs", "cvae")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a sweep runs. Empty override dicts mean the library defaults.

  Attributes:
    name: 'full', 'quick' or 'tiny' (written into the report).
    n_paired, n_unpaired, seeds, estimators: the LSDM grid (all combinations).
    extension: (estimator, n_paired) pairs run again with `stage2.unpaired_weight =
      unpaired_weight`, for every n_unpaired > 0 and seed.
    unpaired_weight: the marginal term's weight in the extension runs.
    overrides: config fields ('stage1.steps': 800, ...) set in every LSDM run.
    estimator_overrides: estimator → further fields for its runs.
    baseline_n_paired: n_paired values at which the baselines run.
    reference_estimator: the estimator of the LSDM run whose latent space the diffusion
      baseline uses and against which its speed is measured.
    ddim_steps: the latent-diffusion DDIM step counts: 10, 50 and 250,
      and 20 and 100 between them, so that the step count whose FD is closest to LSDM's
      (the speed comparison) is not decided by a grid a factor of five apart.
    diffusion, pixel_wgcs, cvae: fields of `DiffusionConfig`, `PixelWGCSConfig`,
      `CVAEConfig`.
    timing_repeats: timed generation calls after the warm-up (the median counts).
  """

  name: str
  n_paired: tuple[int, ...]
  n_unpaired: tuple[int, ...]
  seeds: tuple[int, ...]
  estimators: tuple[str, ...]
  extension: tuple[tuple[str, int], ...]
  unpaired_weight: float = 0.5
  overrides: dict = dataclasses.field(default_factory=dict)
  estimator_overrides: dict = dataclasses.field(default_factory=dict)
  baseline_n_paired: tuple[int, ...] = ()
  reference_estimator: str = "critic"
  ddim_steps: tuple[int, ...] = (10, 20, 50, 100, 250)
  diffusion: dict = dataclasses.field(default_factory=dict)
  pixel_wgcs: dict = dataclasses.field(default_factory=dict)
  cvae: dict = dataclasses.field(default_factory=dict)
  timing_repeats: int = 3

  def __post_init__(self):
    if self.baseline_n_paired and self.reference_estimator not in self.estimators:
      raise ValueError(f"reference_estimator {self.reference_estimator!r} is not swept")
    if not set(self.baseline_n_paired) <= set(self.n_paired):
      raise ValueError(f"baseline_n_paired {self.baseline_n_paired} must be swept n_paired")
    for estimator, n_paired in self.extension:
      if estimator not in self.estimators or n_paired not in self.n_paired:
        raise ValueError(f"extension ({estimator}, {n_paired}) is outside the grid")
    if not self.unpaired_weight > 0:
      raise ValueError("unpaired_weight must be > 0 (0 is the paper's method, in the grid)")

  @property
  def reference_n_unpaired(self) -> int:
    """The n_unpaired of the LSDM runs the baselines are compared with (the largest)."""
    return max(self.n_unpaired)


def full_settings() -> Settings:
  """The full sweep: library defaults everywhere (estimated ~5 h on 2 idle cores)."""
  return Settings(
    name="full",
    n_paired=(100, 500),
    n_unpaired=(0, 500, 1500, 3500),
    seeds=(0, 1, 2),
    estimators=("critic", "sinkhorn"),
    extension=(("critic", 100), ("critic", 500), ("sinkhorn", 100), ("sinkhorn", 500)),
    baseline_n_paired=(500, 100),
  )


def quick_settings() -> Settings:
  """A smaller sweep for < 20 min on 2 idle cores: fewer cells and seeds, shorter training.

  16 jobs, 4 stage-1 trainings; `estimates` gives ~14 min (about 40% of it per-job
  compilation and evaluation), which leaves some room for a machine that is not idle.
  """
  return Settings(
    name="quick",
    n_paired=(500,),
    n_unpaired=(0, 3500),
    seeds=(0, 1),
    estimators=("critic", "sinkhorn"),
    extension=(("critic", 500),),
    overrides={"stage1.steps": 800},
    estimator_overrides={"critic": {"stage2.steps": 1200}, "sinkhorn": {"stage2.steps": 800}},
    baseline_n_paired=(500,),
    diffusion={"steps": 500},
    pixel_wgcs={"steps": 500},
    cvae={"steps": 1000},
  )


def tiny_settings() -> Settings:
  """For the test: `experiments/configs/test.py`'s model sizes and a few steps everywhere.

  One seed, n_unpaired 0 and 300, the critic only, one extension run (which reuses a
  stage 1), one DDIM step count. The numbers mean nothing; the pipeline is exercised.
  """
  from experiments.configs import test as test_config
  from lsdm_jax import config as config_lib

  def flat(c, prefix=""):
    out = {}
    for k, v in c.items():
      if hasattr(v, "items"):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[f"{prefix}{k}"] = v
    return out

  base, tiny = flat(config_lib.base_config()), flat(test_config.get_config())
  overrides = {k: v for k, v in tiny.items() if base[k] != v and not k.startswith("data.")}
  return Settings(
    name="tiny",
    n_paired=(100,),
    n_unpaired=(0, 300),
    seeds=(0,),
    estimators=("critic",),
    extension=(("critic", 100),),
    overrides=overrides,
    baseline_n_paired=(100,),
    ddim_steps=(2,),
    diffusion={
      "steps": 10,
      "batch_size": 16,
      "width": 16,
      "depth": 1,
      "cond_features": 8,
      "time_features": 8,
      "warmup_steps": 2,
      "steps_per_call": 5,
    },
    pixel_wgcs={
      "steps": 4,
      "batch_size": 16,
      "widths": (32,),
      "critic_widths": (32,),
      "n_critic": 1,
      "noise_dim": 4,
      "embed_features": 4,
      "steps_per_call": 2,
    },
    cvae={
      "steps": 4,
      "batch_size": 16,
      "latent_dim": 4,
      "embed_features": 4,
      "encoder_widths": (32,),
      "decoder_widths": (32,),
      "steps_per_call": 2,
    },
    timing_repeats=1,
  )


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Job:
  """One unit of work with its own directory `OUT/runs/<name>/`.

  Attributes:
    kind: one of `KINDS`.
    n_paired: paired examples.
    n_unpaired: LSDM: unpaired images of the run. Baselines: the n_unpaired of the split
      (and, for latent diffusion, of the LSDM run whose latent space it uses).
    seed: training seed and split seed.
    estimator: LSDM's W1 estimator ('' for the baselines).
    unpaired_weight: LSDM's `stage2.unpaired_weight`.
  """

  kind: str
  n_paired: int
  n_unpaired: int
  seed: int
  estimator: str = ""
  unpaired_weight: float = 0.0

  @property
  def name(self) -> str:
    if self.kind == "lsdm":
      return (
        f"lsdm_{self.estimator}_p{self.n_paired}_u{self.n_unpaired}"
        f"_w{self.unpaired_weight:g}_s{self.seed}"
      )
    return f"{self.kind}_p{self.n_paired}_s{self.seed}"

  @property
  def group(self) -> str:
    if self.kind != "lsdm":
      return "baseline"
    return "extension" if self.unpaired_weight > 0 else "grid"


def grid_jobs(s: Settings) -> list[Job]:
  """The paper's method (unpaired_weight 0) on the whole grid."""
  return [
    Job("lsdm", p, u, seed, est)
    for p in s.n_paired
    for u in s.n_unpaired
    for seed in s.seeds
    for est in s.estimators
  ]


def extension_jobs(s: Settings) -> list[Job]:
  """The marginal-matching runs: each (estimator, n_paired) of `s.extension`, n_unpaired > 0."""
  return [
    Job("lsdm", p, u, seed, est, s.unpaired_weight)
    for est, p in s.extension
    for u in s.n_unpaired
    if u > 0
    for seed in s.seeds
  ]


def reference_job(job: Job, s: Settings) -> Job:
  """The LSDM run a baseline job shares its paired set (and latent space) with."""
  return Job("lsdm", job.n_paired, s.reference_n_unpaired, job.seed, s.reference_estimator)


def baseline_jobs(s: Settings) -> list[Job]:
  u = s.reference_n_unpaired
  return [
    Job(kind, p, u, seed)
    for p in s.baseline_n_paired
    for seed in s.seeds
    for kind in ("latent_diffusion", "pixel_wgcs", "cvae")
  ]


def plan(s: Settings) -> list[Job]:
  """Every job in order: LSDM runs grouped by stage-1 key (the first of a group trains
  stage 1, the others copy it), then the baselines (which need their LSDM runs)."""
  lsdm = grid_jobs(s) + extension_jobs(s)
  order = {(p, u, seed): i for i, (p, u, seed) in enumerate(_keys(s))}
  lsdm.sort(key=lambda j: order[(j.n_paired, j.n_unpaired, j.seed)])  # Stable: grid first.
  return lsdm + baseline_jobs(s)


def _keys(s: Settings) -> Iterable[tuple[int, int, int]]:
  return [(p, u, seed) for p in s.n_paired for u in s.n_unpaired for seed in s.seeds]


def _parse_sets(sets: Sequence[str], defaults: dict, what: str, keys: str) -> dict:
  """'KEY=VALUE' strings → {KEY: value}, each value of its default's type."""
  out = {}
  for item in sets:
    key, sep, text = item.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"{what} {item!r}: use KEY=VALUE with KEY {keys}")
    default = defaults[key]
    try:
      value = text if isinstance(default, str) else ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = None
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
      value = tuple(value)
    elif isinstance(default, float) and type(value) is int:
      value = float(value)
    if type(value) is not type(default):
      raise ValueError(
        f"{what} {item!r}: {key} takes {type(default).__name__} values like {default!r}"
      )
    out[key] = value
  return out


def with_sets(s: Settings, lsdm: Sequence[str] = (), diffusion: Sequence[str] = ()) -> Settings:
  """`s` with KEY=VALUE fields set on top: `lsdm` in every LSDM run's config (e.g.
  'stage2.steps=20000'), `diffusion` in the latent-diffusion baseline's `DiffusionConfig`
  (e.g. 'steps=4000'). The settings' name records them, so the report shows them.

  Raises:
    ValueError: an unknown key or a value of the wrong type, named.
  """
  from lsdm_jax.baselines.latent_diffusion import DiffusionConfig

  if not lsdm and not diffusion:
    return s
  base = mnist5k_classcond.get_config()
  lsdm_defaults = {
    f"{section}.{k}": v
    for section, fields in base.to_dict().items()
    if isinstance(fields, dict)
    for k, v in fields.items()
  }
  lsdm_sets = _parse_sets(lsdm, lsdm_defaults, "--set", "a field of lsdm_jax/config.py")
  # The grid's own fields (and the estimator, a grid axis too) would collapse the grid.
  grid = {*job_fields(Job("lsdm", 0, 0, 0, "critic")), "stage2.estimator"} & set(lsdm_sets)
  if grid:
    raise ValueError(f"--set cannot change {sorted(grid)}: the sweep sets them per job")
  diffusion_defaults = dataclasses.asdict(DiffusionConfig(**s.diffusion))
  diffusion_sets = _parse_sets(
    diffusion, diffusion_defaults, "--diffusion_set", f"one of {sorted(diffusion_defaults)}"
  )
  try:  # Their own checks, before any job runs.
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(lsdm_sets)
    config_lib.validate(config)
    DiffusionConfig(**{**s.diffusion, **diffusion_sets})
  except ConfigError as e:
    raise ValueError(f"{', '.join([*lsdm, *diffusion])}: {e}") from None
  label = ", ".join([*lsdm, *(f"diffusion.{d}" for d in diffusion)])
  return dataclasses.replace(
    s,
    name=f"{s.name} ({label})",
    overrides={**s.overrides, **lsdm_sets},
    # A field set here wins over the estimator's own (e.g. the quick sweep's stage2.steps).
    estimator_overrides={
      e: {k: v for k, v in o.items() if k not in lsdm_sets}
      for e, o in s.estimator_overrides.items()
    },
    diffusion={**s.diffusion, **diffusion_sets},
  )


def job_fields(job: Job) -> dict:
  """The config fields each LSDM job sets from its place in the grid."""
  return {
    "seed": job.seed,
    "data.split_seed": job.seed,
    "data.n_paired": job.n_paired,
    "data.n_unpaired": job.n_unpaired,
    "stage2.unpaired_weight": float(job.unpaired_weight),
  }


def lsdm_config(job: Job, s: Settings):
  """The run's config: `mnist5k_classcond.get_config(estimator)` with the job's fields."""
  config = mnist5k_classcond.get_config(job.estimator)
  config.lock()  # A misspelt override is an error, as on the command line.
  fields = {
    **job_fields(job),
    **s.overrides,
    **s.estimator_overrides.get(job.estimator, {}),
  }
  config.update_from_flattened_dict(fields)
  return config


def stage1_key(config) -> str:
  """What stage 1 and the latents depend on: the seed, the data and the stage-1 fields
  that change results (train.py's latents fingerprint plus the seed, which it omits)."""
  d = config.to_dict() if hasattr(config, "to_dict") else config
  stage1 = {k: v for k, v in d["stage1"].items() if k not in OPERATIONAL_FIELDS}
  key = {"seed": d["seed"], "data": d["data"], "stage1": stage1}
  return json.dumps(key, sort_keys=True, default=list)


# --------------------------------------------------------------------------- time estimates

# Steps per second on 2 idle cores at the library's default model sizes and batch sizes
# (stage 1: 128 images; stage 2: 256 latents). Stage 1 and the critic are the figures the
# project measured; the others were measured under `nice -n 19` next to other jobs (load
# average 3-4 on 2 cores, where the critic ran at 28 instead of 45) and scaled by 45/28,
# so they are rough. pixel_wgcs was then re-measured on idle cores: its 5,000 default steps
# took 10 min 54 s to 11 min 7 s per job.
STEPS_PER_SECOND = {
  "stage1": 40.0,
  "critic": 45.0,
  "sinkhorn": 59.0,
  "critic+marginal": 23.0,
  "sinkhorn+marginal": 32.0,
  "latent_diffusion": 120.0,
  "pixel_wgcs": 7.8,
  "cvae": 46.0,
}
# Per job: compilation, checkpoints, sample grids and evaluation (bound terms included). An
# LSDM run with 40-step stages took ~21 s beyond its steps under the load above (~13 s
# scaled); the baselines' compilations 6-12 s there. Rounded up.
OVERHEAD_SECONDS = {"lsdm": 20.0, "latent_diffusion": 15.0, "pixel_wgcs": 20.0, "cvae": 15.0}
EVALUATION_SECONDS = 5.0  # One evaluate_classcond of 1,000 samples.


def estimate_seconds(job: Job, s: Settings, *, trains_stage1: bool = True) -> float:
  """Expected wall time of a job on 2 idle cores (a rough guide, not a measurement)."""
  from lsdm_jax.baselines import cvae, latent_diffusion, pixel_wgcs

  if job.kind == "lsdm":
    c = lsdm_config(job, s)
    seconds = OVERHEAD_SECONDS["lsdm"]
    if trains_stage1:
      rate = STEPS_PER_SECOND["stage1"] * 128 / c.stage1.batch_size
      seconds += c.stage1.steps / rate
    name = c.stage2.estimator + ("+marginal" if c.stage2.unpaired_weight > 0 else "")
    rate = STEPS_PER_SECOND[name] * 256 / c.stage2.batch_size
    return seconds + c.stage2.steps / rate
  config_cls, fields = {
    "latent_diffusion": (latent_diffusion.DiffusionConfig, s.diffusion),
    "pixel_wgcs": (pixel_wgcs.PixelWGCSConfig, s.pixel_wgcs),
    "cvae": (cvae.CVAEConfig, s.cvae),
  }[job.kind]
  cfg = config_cls(**fields)
  rate = STEPS_PER_SECOND[job.kind] * 256 / cfg.batch_size
  evaluations = len(s.ddim_steps) if job.kind == "latent_diffusion" else 1
  return OVERHEAD_SECONDS[job.kind] + cfg.steps / rate + evaluations * EVALUATION_SECONDS


def estimates(s: Settings) -> dict[str, float]:
  """Seconds per job of `plan(s)`; stage 1 is counted once per stage-1 key."""
  seen, out = set(), {}
  for job in plan(s):
    key = stage1_key(lsdm_config(job, s)) if job.kind == "lsdm" else None
    out[job.name] = estimate_seconds(job, s, trains_stage1=key not in seen)
    seen.add(key)
  return out


def format_plan(s: Settings, out: pathlib.Path) -> str:
  """The planned jobs, their state in `out` and the estimated time, as text."""
  est = estimates(s)
  lines = [f"{s.name} sweep into {out}: {len(est)} jobs", ""]
  lines.append(f"{'job':<40} {'group':<10} {'state':<8} {'estimate':>9}")
  todo = 0.0
  for job in plan(s):
    state = job_state(out, job)
    todo += est[job.name] if state != "done" else 0.0
    lines.append(f"{job.name:<40} {job.group:<10} {state:<8} {format_duration(est[job.name]):>9}")
  ext = [j.name for j in extension_jobs(s)]
  lines += [
    "",
    f"extension runs (stage2.unpaired_weight={s.unpaired_weight:g}): {len(ext)}",
    f"estimated total {format_duration(sum(est.values()))}, still to run "
    f"{format_duration(todo)} on 2 idle cores (rough; add ~40 s once if the feature net is "
    "not cached; a loaded machine is slower)",
  ]
  return "\n".join(lines)


# --------------------------------------------------------------------------- job directories


def run_dir(out: str | os.PathLike, name: str) -> pathlib.Path:
  """`OUT/runs/<name>`: a job's directory."""
  return pathlib.Path(out) / "runs" / name


def job_state(out: pathlib.Path, job: Job) -> str:
  """'done' (its metrics.json exists), 'failed' (its failed.json does) or 'todo'."""
  d = run_dir(out, job.name)
  if (d / "metrics.json").exists():
    return "done"
  return "failed" if (d / "failed.json").exists() else "todo"
