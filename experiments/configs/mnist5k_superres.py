"""4x super-resolution of the embedded 5,000 MNIST digits: 500 paired, 3,500 unpaired.

x is y average-pooled 4x4 (7x7 inputs for 28x28 digits). Stage 1 learns E, D on all
4,000 training images; stage 2 learns G(η, x) from the 500 pairs only.

    python -m experiments.main --config=experiments/configs/mnist5k_superres.py \
        --workdir=runs/mnist5k_superres

The same with no unpaired images (stage 1 on the 500 paired ones alone):

    ... --config.data.n_unpaired=0

`:semi` gives the 3,500 unpaired images their exact conditions (x = pooled y, known
degradation) and trains stage 2 on all 4,000 pairs: a fully paired task, not the paper's
setting. It also moves each decoded sample half way towards consistency with its input
(`task.projection=0.5`; docs/semi_supervised.md):

    python -m experiments.main --config=experiments/configs/mnist5k_superres.py:semi \
        --workdir=runs/mnist5k_superres_semi

Its study `baselines` (`python -m experiments.study --config=THIS --study=baselines
--out=DIR`) compares LSDM with bicubic and an L2 regressor on the same pairs.
"""

from lsdm_jax.config import base_config
from lsdm_jax.errors import ConfigError


def get_config(variant: str = "paper"):
  if variant not in ("paper", "semi"):
    raise ConfigError(f"unknown variant {variant!r} after ':' in --config; use paper or semi")
  config = base_config()
  config.data.source = "mnist5k"
  config.data.n_paired = 500
  config.data.n_unpaired = 3500
  config.task.name = "superres"
  config.task.factor = 4
  config.eval.num_inputs = 1000  # The whole mnist5k test split.
  # Stage 2 (docs/results.md): no jitter on the real latents (each input has one answer in
  # the pairs; jitter only blurs it) and a slower generator.
  config.stage2.real_noise = 0.0
  config.stage2.steps = 6000
  config.stage2.learning_rate = 5e-5
  config.stage2.critic_learning_rate = 2e-4
  if variant == "semi":
    config.semi.enabled = True
    # Half the residual block shift towards the input (docs/semi_supervised.md).
    config.task.projection = 0.5
  return config


PROJECTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sweep(add, study: str):
  """`baselines`: LSDM (the paper's setting, with no unpaired images, and the `semi`
  variant with a projection or a consistency loss) against bicubic and an L2 regressor on
  the same 500 pairs; each LSDM run also rescored at every `task.projection` amount."""
  if study != "baselines":
    raise ConfigError(f"unknown study {study!r}; use baselines")
  add("lsdm", 0, projections=PROJECTIONS)
  add("lsdm_paired_only", 0, **{"data.n_unpaired": 0})
  add("lsdm_semi", 0, variant="semi", projections=PROJECTIONS)
  add(
    "lsdm_semi_c2k",
    0,
    variant="semi",
    **{"task.projection": 0.0, "stage2.consistency_weight": 2000.0},
  )
  add("regression", 0, "superres_baselines", reference="lsdm_s0")
