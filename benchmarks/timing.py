"""Timing shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

import time

import jax


def time_calls(step, state, batch, calls: int) -> tuple[float, object]:
  """Seconds per call of `step(state, batch)` after two warm-up (compiling) calls."""
  for _ in range(2):
    state, _ = step(state, batch)
    jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(calls):
    state, _ = step(state, batch)
    jax.block_until_ready(state)  # Also avoids jax 0.10's CPU dispatch deadlock.
  return (time.perf_counter() - t) / calls, state
