"""Trains LSDM end to end (stage 1, latents, stage 2), writes sample grids and metrics.

    python -m experiments.main --config=experiments/configs/mnist5k_classcond.py \
        --workdir=runs/mnist5k_classcond [--config.stage2.estimator=sinkhorn]

This file only parses flags and reports devices; the pipeline is
`lsdm_jax.train.train_and_evaluate`, which tests and notebooks call too. Rerunning the
same command on the same workdir resumes; a finished stage is skipped.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from lsdm_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, latents, samples and metrics.")
flags.DEFINE_bool("overwrite", False, "Replace a run of a different config in --workdir.")
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (experiments/configs/*.py).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cli.quiet_library_logs()
  config = FLAGS.config
  import jax

  if config.multihost:
    from lsdm_jax import parallel

    parallel.initialize_distributed()  # See its docstring for the environment variables.
  logging.info(
    "JAX %s, %d process(es), devices: %s", jax.__version__, jax.process_count(), jax.devices()
  )
  from lsdm_jax.train import train_and_evaluate

  cli.run_guarded(train_and_evaluate, config, FLAGS.workdir, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
