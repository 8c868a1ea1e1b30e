"""What the benchmark scripts share (run as `python benchmarks/NAME.py`): timing, the
stage-2 step they time, and writing their tables."""

import pathlib
import time

import jax
import numpy as np

from lsdm_jax import parallel, stage2
from lsdm_jax.data.tasks import Task

NUM_CLASSES = 10


def stage2_step(config, mesh):
  """(Stage2, jitted train step, sharded state, placed data): `config`'s stage 2 on 1,024
  random class-conditional latents."""
  task = Task("classcond", "label", (), num_classes=NUM_CLASSES)
  d = config.stage1.latent_dim
  rng = np.random.default_rng(0)
  data = {
    "x": (np.arange(1024) % NUM_CLASSES).astype(np.int32),
    "z": rng.standard_normal((1024, d)).astype(np.float32),
    "z_unpaired": rng.standard_normal((8, d)).astype(np.float32),
  }
  s2 = stage2.Stage2(config, task, d, mesh)
  state, shardings = parallel.create_sharded(lambda: s2.init_state(data["x"][:1]), mesh)
  data_shardings = {k: parallel.replicated(mesh) for k in data}
  step = s2.make_train_step(shardings, data_shardings)
  return s2, step, state, jax.device_put(data, data_shardings)


def write_table(text: str, out) -> None:
  """Writes a benchmark's markdown to `out` (creating its folder) and prints it."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  print(text)
  print(f"wrote {out}")


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
