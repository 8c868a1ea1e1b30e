"""Throughput of the stage-1 and stage-2 train steps on 1, 2, 4 and 8 devices.

    python benchmarks/scaling.py            # the real measurement (idle machine)
    python benchmarks/scaling.py --quick    # tiny models, a few steps: checks it runs

Each step is the library's own jitted, sharded step (`stage1.make_train_step`,
`stage2.Stage2.make_train_step`) on a (n, 1) mesh with the *same global batch* for every
n, timed after compilation with a wait on every call; throughput is examples per second
(images for stage 1; paired latents per generator update for stage 2). The table goes to
`benchmarks/results/scaling.md` and stdout.

On CPU the devices are simulated (`--xla_force_host_platform_device_count=8`, set here
before JAX starts): they share the same cores, so more devices cannot be faster. The
ratio to the 1-device row measures what sharding costs (partitioned programs, the
gradient all-reduce, per-device dispatch), not a speed-up.

Projected per-chip throughput on GPU/TPU. Run this script on one accelerator of the
target kind (`--devices=1`; JAX then uses the real device) to measure the single-chip
step time t₁(b) at the per-chip batch b. Data parallelism over N chips adds one
all-reduce of the gradients per optimiser step; a ring all-reduce moves
2·(N−1)/N · 4·P bytes per chip for P float32 parameters (the table lists P, and the
step's updates: one for stage 1, n_critic + 1 for stage 2 with the critic). With
inter-chip bandwidth W (bytes/s, per direction) and no overlap of communication with
compute (the pessimistic case),

    t_N = t₁(b) + updates · 2·(N−1)/N · 4·P / W,
    projected per-chip throughput = b / t_N,   total = N · b / t_N.

The models here are small (P ≲ 10⁶, a few MB of gradients), so at NVLink or ICI
bandwidths (≥ 100 GB/s) the all-reduce costs tens of microseconds and per-chip
throughput stays close to t₁'s; the fixed per-step overhead seen in this CPU table
(dispatch and partitioning, independent of the hardware's speed) is the other term to
add to t_N when b is small. Verify a projection by running the script on N real chips.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import pathlib
import platform
import sys

if __name__ == "__main__" and "jax" not in sys.modules:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from timing import time_calls, write_table  # noqa: E402 (benchmarks/timing.py)

from experiments.report import markdown_table  # noqa: E402
from lsdm_jax import config as config_lib  # noqa: E402
from lsdm_jax import parallel, stage1, stage2  # noqa: E402
from lsdm_jax.data.tasks import Task  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "scaling.md"


def _config(quick: bool):
  c = config_lib.base_config()
  if quick:
    c.stage1.features, c.stage1.hidden, c.stage1.latent_dim, c.stage1.batch_size = (4,), 16, 4, 16
    s = c.stage2
    s.hidden, s.critic_hidden, s.cond_features, s.noise_dim = (16,), (16,), 8, 4
    s.batch_size, s.steps_per_call, s.n_critic, s.sinkhorn_iterations = 16, 2, 2, 20
    s.epsilon = 0.5
  return c


def _num_params(tree) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def bench_stage1(config, mesh, image_shape, calls: int) -> dict:
  cfg = config.stage1
  model = stage1.make_model(cfg, image_shape)
  init = functools.partial(stage1.init_state, model, jax.random.key(0), cfg, image_shape)
  state, shardings = parallel.create_sharded(init, mesh)
  tx = stage1.make_optimizer(cfg, state.params)
  step = stage1.make_train_step(model, tx, cfg, mesh, shardings, jax.random.key(1))
  rng = np.random.default_rng(0)
  images = rng.random((cfg.batch_size, *image_shape), np.float32)
  batch = parallel.global_batch(mesh, images)
  seconds, state = time_calls(step, state, batch, calls)
  return {
    "examples_per_s": cfg.batch_size / seconds,
    "params": _num_params(state.params),
    "updates": 1,
  }


def bench_stage2(config, mesh, estimator: str, calls: int) -> dict:
  config = config.copy_and_resolve_references()
  cfg = config.stage2
  cfg.estimator = estimator
  task = Task("classcond", "label", (), num_classes=10)
  d = config.stage1.latent_dim
  rng = np.random.default_rng(0)
  data = {
    "x": (np.arange(1024) % 10).astype(np.int32),
    "z": rng.standard_normal((1024, d)).astype(np.float32),
    "z_unpaired": rng.standard_normal((8, d)).astype(np.float32),
  }
  s2 = stage2.Stage2(config, task, d, mesh)
  state, shardings = parallel.create_sharded(lambda: s2.init_state(data["x"][:1]), mesh)
  data_shardings = {k: parallel.replicated(mesh) for k in data}
  step = s2.make_train_step(shardings, data_shardings)
  seconds, state = time_calls(step, state, jax.device_put(data, data_shardings), calls)
  return {
    "examples_per_s": cfg.batch_size * cfg.steps_per_call / seconds,
    "params": _num_params(state.params),
    "updates": cfg.n_critic + 1 if estimator == "critic" else 1,
  }


def run(device_counts, quick: bool, calls: int, image_shape) -> tuple[list, dict]:
  config = _config(quick)
  rows = []
  for n in device_counts:
    mesh = parallel.make_mesh(n, 1)
    for c in (config.stage1.batch_size, config.stage2.batch_size):
      parallel.check_batch_size(c, mesh, "batch_size")
    row = {"devices": n}
    row["stage1"] = bench_stage1(config, mesh, image_shape, calls)
    row["stage2_critic"] = bench_stage2(config, mesh, "critic", calls)
    row["stage2_sinkhorn"] = bench_stage2(config, mesh, "sinkhorn", calls)
    rows.append(row)
    print(
      f"{n} device(s): "
      + ", ".join(f"{k} {v['examples_per_s']:.0f} ex/s" for k, v in row.items() if k != "devices"),
      flush=True,
    )
  return rows, config


def markdown(rows, config, quick: bool, image_shape) -> str:
  stages = [k for k in rows[0] if k != "devices"]
  base = {k: rows[0][k]["examples_per_s"] for k in stages}
  lines = [
    "# Scaling: throughput of the train steps on 1, 2, 4, 8 devices",
    "",
    f"{datetime.date.today().isoformat()}, JAX {jax.__version__}, backend "
    f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU "
    f"core(s), {platform.python_implementation()} {platform.python_version()}"
    + (", **--quick (tiny models; not a measurement)**" if quick else ""),
    "",
    f"Global batch fixed for every device count: stage 1 {config.stage1.batch_size} images "
    f"of {'x'.join(map(str, image_shape))}; stage 2 {config.stage2.batch_size} latents per "
    f"generator update, {config.stage2.steps_per_call} updates per call, n_critic "
    f"{config.stage2.n_critic}, Sinkhorn ε {config.stage2.epsilon}. Examples/s (× the "
    "1-device rate). On CPU the devices are simulated and share the cores: the ratio is "
    "sharding overhead, not speed-up (see `benchmarks/scaling.py` for the GPU/TPU "
    "projection).",
    "",
  ]
  body = [
    [str(row["devices"])]
    + [
      f"{row[k]['examples_per_s']:.0f} (×{row[k]['examples_per_s'] / base[k]:.2f})" for k in stages
    ]
    for row in rows
  ]
  lines.append(markdown_table(["devices", *stages], body, "r" * (1 + len(stages))))
  body = [[k, f"{rows[0][k]['params']:,}", str(rows[0][k]["updates"])] for k in stages]
  lines.append(markdown_table(["stage", "parameters P", "all-reduces per step"], body, "lrr"))
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny models, few calls")
  parser.add_argument("--devices", default="1,2,4,8", help="device counts to measure")
  parser.add_argument("--calls", type=int, default=None, help="timed calls per setting")
  parser.add_argument("--image_shape", default="28,28,1", help="stage-1 image H,W,C")
  parser.add_argument("--out", default=str(RESULTS), help="markdown file to write")
  args = parser.parse_args(argv)
  counts = [int(n) for n in args.devices.split(",")]
  image_shape = tuple(int(s) for s in args.image_shape.split(","))
  if max(counts) > jax.device_count():
    parser.error(f"--devices asks for {max(counts)} but JAX has {jax.device_count()}")
  calls = args.calls or (2 if args.quick else 20)
  rows, config = run(counts, args.quick, calls, image_shape)
  text = markdown(rows, config, args.quick, image_shape)
  write_table(text, args.out)


if __name__ == "__main__":
  main()
