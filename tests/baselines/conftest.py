"""A toy paired set for the pixel-space baselines: two classes of 8x8 images."""

import numpy as np
import pytest


def toy_pairs(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Class 0 is bright in the top half, class 1 in the bottom half; noise on every pixel.

  Returns:
    labels (n,) int32 and images (n, 8, 8, 1) float32 in [0, 1].
  """
  rng = np.random.default_rng(seed)
  x = (np.arange(n) % 2).astype(np.int32)
  y = 0.1 + 0.05 * rng.normal(size=(n, 8, 8, 1))
  bright = 0.9 + 0.05 * rng.normal(size=(n, 4, 8, 1))
  y[x == 0, :4] = bright[x == 0]
  y[x == 1, 4:] = bright[x == 1]
  return x, np.clip(y, 0.0, 1.0).astype(np.float32)


def class_margin(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per image: mean of its class's bright half minus mean of the other half, (n,)."""
  top, bottom = images[:, :4].mean(axis=(1, 2, 3)), images[:, 4:].mean(axis=(1, 2, 3))
  return np.where(labels == 0, top - bottom, bottom - top)


@pytest.fixture(scope="session")
def toy():
  return toy_pairs()


def section(name: str, **fields):
  """Baseline section `name` of `base_config()` with `fields` changed."""
  from lsdm_jax.config import base_config

  config = base_config()[name]
  config.update(fields)
  return config
