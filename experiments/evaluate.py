"""Recomputes the metrics of a trained run on the held-out test split.

    python -m experiments.evaluate --workdir=runs/mnist5k_classcond [--out=metrics_again.json]
    python -m experiments.evaluate --workdir=runs/mnist5k_classcond --reference=unpaired

Loads the run (`lsdm_jax.load`), rebuilds its data split from the run's `config.json`,
and writes the same metrics `experiments.main` writes (to `--out`, default
`WORKDIR/metrics.json`, replaced atomically) and prints them.

`--reference=validation` scores the run against its held-out validation rows
(`data.n_validation`) and `--reference=unpaired` a class-conditional run against its own
unpaired train images (`Experiment.reference`): ways to compare settings without looking at
the test images. metrics.json holds the reference the run was trained with
(`eval.reference`); another reference's default `--out` is `WORKDIR/metrics_<reference>.json`,
so metrics.json stays as it is.
"""

import json
import pathlib

from absl import app, flags

from lsdm_jax import cli

FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a script, so that tests may import the module."""
  from lsdm_jax.data.experiment import REFERENCES

  flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
  flags.DEFINE_string(
    "out",
    None,
    "Where to write the metrics (default: WORKDIR/metrics.json, or "
    "WORKDIR/metrics_<reference>.json for another --reference).",
  )
  flags.DEFINE_enum(
    "reference",
    "test",
    list(REFERENCES),
    "The images the samples are scored against: the test split, the run's held-out "
    "validation rows (data.n_validation), or its unpaired train images (class-conditional).",
  )
  flags.mark_flags_as_required(["workdir"])


def evaluate_run(workdir, out=None, reference: str = "test") -> dict:
  """Scores the run in `workdir` and writes its metrics (see the module docstring)."""
  import lsdm_jax
  from lsdm_jax import evaluation, train
  from lsdm_jax import workdir as workdir_lib

  config = workdir_lib.load_config(workdir)
  exp = train.setup(config)
  exp.reference(reference)  # Refuses a run it cannot score before loading anything.
  model = lsdm_jax.load(workdir)
  metrics = evaluation.evaluate(model, exp, config, reference=reference)
  # metrics.json holds the run's own reference (eval.reference); another goes beside it.
  same = reference == config.eval.reference
  name = "metrics.json" if same else f"metrics_{reference}.json"
  path = pathlib.Path(out) if out else pathlib.Path(workdir) / name
  workdir_lib.write_json(path, metrics)
  return metrics


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  metrics = cli.run_guarded(evaluate_run, FLAGS.workdir, FLAGS.out, FLAGS.reference)
  print(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
