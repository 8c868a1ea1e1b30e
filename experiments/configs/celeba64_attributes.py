"""CelebA faces at 64x64 conditioned on binary attributes (TFDS `celeb_a`, prepared locally).

    tfds build celeb_a --file_format=array_record --data_dir=DIR   # once, with network
    python -m experiments.main --config=experiments/configs/celeba64_attributes.py \
        --config.data.data_dir=DIR --workdir=runs/celeba64_attributes

x is the vector of four CelebA attributes, (Male, Eyeglasses, Smiling, Young) in {0, 1};
5,000 train images keep theirs (paired), 150,000 are unpaired. Images are centre-cropped
and resized to 64x64 and read lazily with `tfds.data_source`, stage-1 batches by grain
(`data.streaming`): the split is never held in memory. Evaluation: per-attribute agreement
of a domain attribute classifier trained on the train split, FD and precision/recall in
its features, and with `--config.eval.inception_weights=FILE` FID as papers report it: 50,000
samples for the attribute vectors of 50,000 random train rows, against the statistics of
all train images (docs/research.md). Without the prepared data the run stops at once with
one line saying how to prepare it.

Stage 1 is latent diffusion's KL-f4 autoencoder as `cifar10_classcond.py` describes it
(64x64x3 → 16x16x3; L1 + LPIPS, 1e-6 KL, the adaptive PatchGAN weight 0.5 from step
50,001, Adam (0.5, 0.9) at 4.5e-6 × batch); batch 64 (their 256-pixel models trained on a
dozen images per GPU; 64-pixel images allow more). Stage 2: the conv FiLM generator and
projection critic on the 16x16x3 latent with WGAN-GP's recipe. bfloat16 compute; on a CPU
pass --config.compute_dtype=float32.

Variants after ':': `default`, `tiny` (toy sizes at 16x16 for the tests on mock data).
"""

from experiments.configs import cifar10_classcond
from lsdm_jax.config import base_config
from lsdm_jax.errors import ConfigError

VARIANTS = ("default", "tiny")
ATTRIBUTES = ("Male", "Eyeglasses", "Smiling", "Young")


def celeba_data(config, image_size: int = 64):
  """CelebA, streamed: 5,000 paired and 150,000 unpaired of the 162,770 train images."""
  d = config.data
  d.source, d.image_size, d.attributes = "tfds:celeb_a", image_size, ATTRIBUTES
  d.n_paired, d.n_unpaired = 5000, 150_000
  d.streaming, d.workers, d.prefetch = True, 4, 4


def autoencoder(config):
  """Latent diffusion's KL-f4 recipe at batch 64, 150,000 steps (about 60 epochs)."""
  cifar10_classcond.kl_f4_autoencoder(config, batch_size=64, steps=150_000)


def get_config(variant: str = "default"):
  if variant not in VARIANTS:
    raise ConfigError(f"unknown variant {variant!r} after ':' in --config; use one of {VARIANTS}")
  config = base_config()
  celeba_data(config)
  config.task.name = "attributes"
  config.compute_dtype = "bfloat16"
  autoencoder(config)
  cifar10_classcond.wgan_gp_conv_stage2(config)  # Critic 16x16 → 8x8 → 4x4.
  config.eval.num_inputs = 10_000  # One sample per test image's attribute vector.
  config.eval.num_samples = 50_000  # FID protocol: the attributes of 50,000 train rows.
  if variant == "tiny":
    cifar10_classcond.shrink(config)
    config.data.image_size = 16
    config.data.workers = 0
  return config
