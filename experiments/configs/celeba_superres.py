"""4x super-resolution of CelebA faces, 16x16 → 64x64 (TFDS `celeb_a`, prepared locally).

    tfds build celeb_a --file_format=array_record --data_dir=DIR   # once, with network
    python -m experiments.main --config=experiments/configs/celeba_superres.py \
        --config.data.data_dir=DIR --workdir=runs/celeba_superres

x is y average-pooled 4x4. Data as `celeba64_attributes.py` (5,000 paired, 150,000
unpaired, 64x64, streamed); its attributes are loaded only for the domain classifier whose
features score the outputs (with PSNR, SSIM, consistency with x, and with
`--config.eval.inception_weights=FILE` FID of one output per test input against the train
split's statistics, beside the targets' own FID). Stage 1 is the same KL-f4 autoencoder
(64x64x3 → 16x16x3); stage 2 the conv FiLM networks, which here see x resized to the
latent's 16x16 grid as input channels. Without the prepared data the run stops at once
with one line saying how to prepare it.

Variants after ':': `default`, `tiny` (toy sizes at 16x16, 4x4 inputs, for the tests).
"""

from experiments.configs import celeba64_attributes, cifar10_classcond
from lsdm_jax.config import base_config
from lsdm_jax.errors import ConfigError

VARIANTS = ("default", "tiny")


def get_config(variant: str = "default"):
  if variant not in VARIANTS:
    raise ConfigError(f"unknown variant {variant!r} after ':' in --config; use one of {VARIANTS}")
  config = base_config()
  celeba64_attributes.celeba_data(config)
  config.task.name = "superres"
  config.task.factor = 4
  config.compute_dtype = "bfloat16"
  celeba64_attributes.autoencoder(config)
  cifar10_classcond.wgan_gp_conv_stage2(config)
  config.eval.num_inputs = 2000
  config.eval.num_samples = 50_000  # FID protocol: every test input (19,962), one sample each.
  if variant == "tiny":
    cifar10_classcond.shrink(config)
    config.data.image_size = 16
    config.data.workers = 0
  return config
