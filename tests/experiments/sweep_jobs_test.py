"""The sweep's timing helper and the choice of the diffusion step count to compare with.

The jobs themselves run in tests/experiments/sweep_test.py (the whole sweep, tiny).
"""

import jax

from experiments import sweep_jobs


def test_timing_and_step_choice():
  seconds, first = sweep_jobs.seconds_per_1000(lambda: jax.numpy.ones((50, 3)), 50, repeats=2)
  assert seconds > 0 and first.shape == (50, 3)
  assert sweep_jobs.closest_step_count({10: 30.0, 50: 22.0, 250: 21.0}, 22.5) == 50
  assert sweep_jobs.closest_step_count({10: 20.0, 50: 24.0}, 22.0) == 10  # Ties: fewer steps.
