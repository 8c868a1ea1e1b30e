"""experiments/independent_classcond_eval.py: the outside scorer tells real digits from noise."""

import numpy as np

from experiments import independent_classcond_eval as independent


def test_independent_scores_real_images_as_real():
  digits = independent.load_digits(independent.default_csv())
  pixels, labels = digits
  train = np.flatnonzero(np.arange(len(pixels)) % 5 != 4)
  train = np.random.default_rng(1).choice(train, 1000, replace=False)  # Rows are class-sorted.
  real = independent.score(pixels[train].reshape(-1, 28, 28, 1), labels[train], digits)
  assert real["accuracy"] > 0.9
  assert real["fd_ratio"] < 1.5
  noise = np.random.default_rng(0).uniform(size=(1000, 28, 28, 1))
  fake = independent.score(noise, labels[train], digits)
  assert fake["fd_ratio"] > 10 * real["fd_ratio"]
  assert fake["recall"] < 0.05
