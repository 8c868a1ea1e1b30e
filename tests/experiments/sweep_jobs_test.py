"""The sweep's timing helper and the choice of the diffusion step count to compare with.

The jobs themselves run in tests/experiments/sweep_test.py (the whole sweep, tiny).
"""

import jax
import pytest

from experiments import sweep_jobs


def test_timing_and_step_choice():
  seconds, first = sweep_jobs.seconds_per_1000(lambda: jax.numpy.ones((50, 3)), 50, repeats=2)
  assert seconds > 0 and first.shape == (50, 3)
  assert sweep_jobs.closest_step_count({10: 30.0, 50: 22.0, 250: 21.0}, 22.5) == 50
  assert sweep_jobs.closest_step_count({10: 20.0, 50: 24.0}, 22.0) == 10  # Ties: fewer steps.


def test_latent_ratio_takes_the_decoder_off_both():
  # 0.6 s and 0.02 s per 1,000 images, 0.015 s of which is the shared decoder.
  assert sweep_jobs.latent_ratio(0.6, 0.02, 0.015) == pytest.approx(117.0)
  assert sweep_jobs.latent_ratio(0.6, 0.02, 0.0) == pytest.approx(30.0)
  # The reference no slower than its decoder alone: timing noise, no ratio.
  assert sweep_jobs.latent_ratio(0.6, 0.015, 0.015) is None
