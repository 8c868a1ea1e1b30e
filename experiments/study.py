"""Runs a study: the grid a config module's `sweep(add, study)` declares.

    python -m experiments.study --config=experiments/configs/mnist5k_classcond.py \
        --study=quick --out=runs/study_quick [--list] [--only=REGEX] [--config.FIELD=VALUE]

`add(setting, seed, kind="lsdm", **fields_and_options)` declares a run `<setting>_s<seed>`:
config fields (dotted names, and `seed`) and options (`OPTIONS`, used by its kind in
`experiments.kinds`). Its config is `get_config(variant)` (a baseline's: its reference
run's) with its fields, then `--config.FIELD=VALUE` overrides, which may not change a
field the grid varies. Each run works in `OUT/runs/<name>/` and ends by writing
`result.json` (its rows); a rerun skips every run that has one. A run that fails leaves
`failed.json` with its one-line error and the study goes on. An LSDM run whose stage-1 key
(seed, data, stage-1 fields) matches a finished run's starts from a copy of that run's
`stage1/` and `latents/`. `OUT/results.jsonl` and the report (`experiments.report`) are
rewritten after each run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import re
import time

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import kinds, report
from lsdm_jax import cli
from lsdm_jax.config import result_fields
from lsdm_jax.errors import ConfigError
from lsdm_jax.loop import format_duration
from lsdm_jax.workdir import atomic_write, write_json

FLAGS = flags.FLAGS
OPTIONS = ("variant", "reference", "pairs", "ddim_steps", "distill_steps", "projections")
OPTIONS += ("compare", "timing_repeats", "unpaired_reference")
SEED_FIELDS = ("seed", "data.split_seed", "stage2.seed")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a study: `setting` (what the report groups over seeds) at `seed`."""

  setting: str
  seed: int
  kind: str
  fields: dict
  options: dict

  @property
  def name(self) -> str:
    return f"{self.setting}_s{self.seed}"


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def plan(module, study: str) -> list[Run]:
  """The runs of `module.sweep(add, study)`, in the order it adds them."""
  runs: list[Run] = []

  def add(setting: str, seed: int, kind: str = "lsdm", /, **kwargs):
    options = {k: v for k, v in kwargs.items() if k in OPTIONS}
    fields = {k: v for k, v in kwargs.items() if k not in OPTIONS}
    bad = [k for k in fields if "." not in k and k != "seed"]
    if bad:
      raise ConfigError(f"study {study!r}: {bad} are neither config fields nor {OPTIONS}")
    runs.append(Run(setting, seed, kind, fields, options))

  if not hasattr(module, "sweep"):
    raise ConfigError(f"{module.__name__} declares no studies (no sweep function)")
  module.sweep(add, study)
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ConfigError(f"study {study!r} names a run twice")
  for r in runs:
    ref = r.options.get("reference")
    if ref is not None and ref not in names[: names.index(r.name)]:
      raise ConfigError(f"study {study!r}: {r.name}'s reference {ref} is not a run added before it")
  return runs


def run_config(module, run: Run, by_name: dict, overrides: dict):
  """`get_config(variant)` of the run (a baseline: of its reference) with its fields and
  the command line's overrides."""
  base = by_name[run.options["reference"]] if "reference" in run.options else run
  config = module.get_config(*[base.options["variant"]] if "variant" in base.options else [])
  config.lock()  # A misspelt field is an error, as on the command line.
  config.update_from_flattened_dict({**base.fields, **run.fields, **overrides})
  return config


def check_overrides(runs: list[Run], overrides: dict) -> None:
  varied = {k for k in {k for r in runs for k in r.fields} if len(_values(runs, k)) > 1}
  clash = sorted((varied | set(SEED_FIELDS)) & set(overrides))
  if clash:
    raise ConfigError(f"--config overrides {clash}: the study sets them per run")


def check_only(runs: list[Run], only: str | None) -> None:
  """Raises ConfigError if `only` is not a regular expression or matches no run."""
  if only is None:
    return
  try:
    pattern = re.compile(only)
  except re.error as e:
    raise ConfigError(f"--only={only!r} is not a regular expression ({e})") from None
  if not any(pattern.search(r.name) for r in runs):
    raise ConfigError(f"--only={only!r} matches none of the study's runs (--list)")


def _values(runs, key):
  return {json.dumps(r.fields.get(key), default=str) for r in runs}


def stage1_key(config) -> str:
  """What stage 1 and the latents depend on: the seed, the data and the stage-1 fields."""
  d = config.to_dict() if hasattr(config, "to_dict") else config
  stage1 = result_fields(d["stage1"])
  return json.dumps({"seed": d["seed"], "data": d["data"], "stage1": stage1}, sort_keys=True)


# --------------------------------------------------------------------------- the runner


class Study:
  """The runs of one study in `out`, run in order."""

  def __init__(self, module, runs: list[Run], out, overrides: dict | None = None, title=""):
    self.module, self.runs, self.out, self.title = module, runs, pathlib.Path(out), title
    self.overrides = dict(overrides or {})
    self.by_name = {r.name: r for r in runs}
    self._scorers = {}
    check_overrides(runs, self.overrides)
    self.configs = {r.name: run_config(module, r, self.by_name, self.overrides) for r in runs}

  def dir(self, name: str) -> pathlib.Path:
    return self.out / "runs" / name

  def state(self, name: str) -> str:
    d = self.dir(name)
    return (
      "done"
      if (d / "result.json").exists()
      else "failed"
      if (d / "failed.json").exists()
      else "todo"
    )

  def rows(self, name: str) -> list[dict]:
    """The run's rows: its result, or one row saying it failed or is pending."""
    saved = kinds.read_json(self.dir(name) / "result.json")
    if saved is not None:
      return saved["rows"]
    failure = kinds.read_json(self.dir(name) / "failed.json")
    run = self.by_name[name]
    row = kinds.row(run, "", {}, error=failure and failure["error"])
    row["status"] = "failed" if failure else "pending"
    return [row]

  def finished_dir(self, name: str) -> pathlib.Path:
    if self.state(name) != "done":
      raise RuntimeError(f"run {name} has not finished (it failed or did not run)")
    return self.dir(name)

  def stage1_source(self, run: Run, config) -> pathlib.Path | None:
    """A run of this study with the same stage-1 key whose latents are written."""
    key = stage1_key(config)
    for other in self.runs:
      d = self.dir(other.name)
      if other is run or other.kind != "lsdm" or not (d / "latents" / "meta" / "metadata").exists():
        continue
      saved = kinds.read_json(d / "config.json")
      if saved is not None and stage1_key(saved) == key and (d / "stage1").is_dir():
        return d
    return None

  def scorer(self, run: Run) -> kinds.Scorer:
    """The scorer of the run's config (the last one is kept: runs in a row share it)."""
    config = self.configs[run.name]
    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    if key not in self._scorers:
      self._scorers = {key: kinds.Scorer(config)}
    self._scorers[key].repeats = run.options.get("timing_repeats", 3)
    return self._scorers[key]

  def run(self, only: str | None = None) -> str:
    """Runs every unfinished run `only` selects; returns the report."""
    pattern = None if only is None else re.compile(only)
    counts = dict.fromkeys(("run", "skipped", "failed", "not selected"), 0)
    for i, run in enumerate(self.runs, 1):
      d = self.dir(run.name)
      if pattern is not None and not pattern.search(run.name):
        counts["not selected"] += 1
        continue
      if self.state(run.name) == "done":
        counts["skipped"] += 1
        continue
      logging.info("[%d/%d] %s", i, len(self.runs), run.name)
      d.mkdir(parents=True, exist_ok=True)
      t = time.perf_counter()
      try:
        rows = kinds.KINDS[run.kind](run, self.configs[run.name], d, self)
      except Exception as e:  # noqa: BLE001 - one failed run must not stop the study.
        error = cli.one_line(f"{type(e).__name__}: {e}")
        logging.error("%s failed: %s", run.name, error)
        write_json(d / "failed.json", {"error": error, "seconds": time.perf_counter() - t})
        counts["failed"] += 1
      else:
        write_json(d / "result.json", {"rows": report.jsonable(rows)})
        (d / "failed.json").unlink(missing_ok=True)
        counts["run"] += 1
        logging.info("%s finished in %s", run.name, format_duration(time.perf_counter() - t))
      self.write_report()
    text = self.write_report()
    logging.info("study: %s", ", ".join(f"{n} {k}" for k, n in counts.items()))
    return text

  def write_report(self) -> str:
    rows = [row for run in self.runs for row in self.rows(run.name)]
    atomic_write(
      self.out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    )
    return report.write(rows, self.out, self.title)

  def listing(self) -> str:
    lines = [f"{len(self.runs)} runs into {self.out}", f"{'run':<44} {'kind':<18} state"]
    lines += [f"{r.name:<44} {r.kind:<18} {self.state(r.name)}" for r in self.runs]
    return "\n".join(lines)


def _define_flags():
  config_flags.DEFINE_config_file("config", None, "A config module with a sweep(add, study).")
  flags.DEFINE_string("study", None, "The study of the config module to run.")
  flags.DEFINE_string("out", None, "Output directory (runs/, results.jsonl, report.md, PNGs).")
  flags.DEFINE_bool("list", False, "Print the runs and their state; run nothing.")
  flags.DEFINE_string("only", None, "Run only the runs whose name matches (re.search).")
  flags.mark_flags_as_required(["config", "study", "out"])


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  try:
    module = load_module(config_flags.get_config_filename(FLAGS["config"]))
    runs = plan(module, FLAGS.study)
    overrides = config_flags.get_override_values(FLAGS["config"])
    title = f"Study `{FLAGS.study}` of {pathlib.Path(module.__file__).name}"
    study = Study(module, runs, FLAGS.out, overrides, title)
    check_only(runs, FLAGS.only)
  except ConfigError as e:
    cli.fail(str(e))
  if FLAGS.list:
    print(study.listing())
    return
  print(cli.run_guarded(study.run, FLAGS.only), end="")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
