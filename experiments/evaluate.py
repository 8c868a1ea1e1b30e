"""Recomputes the metrics of a trained run on the held-out test split.

    python -m experiments.evaluate --workdir=runs/mnist5k_classcond [--out=metrics_again.json]

Loads the run (`lsdm_jax.load`), rebuilds its data split from the run's `config.json`,
and writes the same metrics `experiments.main` writes (to `--out`, default
`WORKDIR/metrics.json`, replaced atomically) and prints them.
"""

import json
import pathlib

from absl import app, flags

from lsdm_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
flags.DEFINE_string("out", None, "Where to write the metrics (default: WORKDIR/metrics.json).")
flags.mark_flags_as_required(["workdir"])


def _evaluate(workdir: str, out: str | None) -> dict:
  import lsdm_jax
  from lsdm_jax import train
  from lsdm_jax import workdir as workdir_lib

  config = workdir_lib.load_config(workdir)
  model = lsdm_jax.load(workdir)
  metrics = train.evaluate(model, train.setup(config), config)
  path = pathlib.Path(out) if out else pathlib.Path(workdir) / "metrics.json"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
  tmp.replace(path)
  return metrics


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  metrics = cli.run_guarded(_evaluate, FLAGS.workdir, FLAGS.out)
  print(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
