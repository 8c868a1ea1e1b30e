"""Class-conditional MNIST on the embedded 5,000 digits: 500 paired, 3,500 unpaired.

    python -m experiments.main --config=experiments/configs/mnist5k_classcond.py \
        --workdir=runs/mnist5k_classcond
"""

from lsdm_jax.config import base_config


def get_config():
  config = base_config()
  config.data.source = "mnist5k"
  config.data.n_paired = 500
  config.data.n_unpaired = 3500
  config.task.name = "classcond"
  return config


def sweep(add):
  """The two W1 estimators."""
  for estimator in ("critic", "sinkhorn"):
    add(**{"stage2.estimator": estimator})
