"""4x super-resolution of CelebA faces, 16x16 → 64x64 (TFDS `celeb_a`, prepared locally).

TFDS cannot download CelebA at run time (it sits behind Google Drive); prepare it once on
a machine with network access and point the run at it:

    tfds build celeb_a --file_format=array_record --data_dir=DIR
    python -m experiments.main --config=experiments/configs/celeba_superres.py \
        --config.data.data_dir=DIR --workdir=runs/celeba_superres

Without the prepared data the run stops at once with one line saying this. Images are
centre-cropped to squares and resized to 64x64 (`data.image_size`); x is y average-pooled
4x4. The train split gives the paired and unpaired images, the test split the metrics.

The sizes below are a starting point scaled up from the MNIST configs; they have not
been trained here (no CelebA on the machine that wrote them), so treat them as untuned.
"""

from lsdm_jax.config import base_config


def get_config():
  config = base_config()
  config.data.source = "tfds:celeb_a"
  config.data.image_size = 64
  config.data.n_paired = 5000
  config.data.n_unpaired = 100_000
  config.task.name = "superres"
  config.task.factor = 4
  s1 = config.stage1
  s1.features = (32, 64, 128)  # 64 → 32 → 16 → 8.
  s1.hidden = 512
  s1.latent_dim = 128
  s1.decoder = "conv"  # Colour faces need spatial structure more than digits do.
  s1.loss = "mse"
  s1.reg_weight = 0.01
  s1.steps = 30_000
  s1.batch_size = 256
  s2 = config.stage2
  s2.noise_dim = 64
  s2.hidden = (512, 512, 512)
  s2.critic_hidden = (512, 512)
  s2.cond_features = 256
  s2.steps = 20_000
  config.eval.num_inputs = 2000
  return config
