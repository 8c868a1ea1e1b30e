"""FLOPs, memory and speed of the research configs at their real per-device batch.

    python benchmarks/scale.py            # the research configs (minutes on a CPU)
    python benchmarks/scale.py --quick    # their tiny variants: checks it runs

For each config (`cifar10_classcond.py`, `celeba64_attributes.py`, `celeba_superres.py`)
on one device, with the config's global batch as the per-device batch:

* parameters of stage 1 (autoencoder and discriminator) and stage 2 (generator, critic);
* FLOPs of one stage-1 step, one stage-2 generator update (with its n_critic critic
  updates) and one generated image, from XLA's cost analysis of the compiled programs;
* peak device memory of each step (compiled memory analysis: arguments + outputs +
  temporaries − donated aliases), and whether it fits a 16 GB and an 80 GB device (with
  10% headroom);
* measured seconds per step (one compiling call, then the mean of `--calls` calls;
  `--calls=0` skips the timing, for a slow backend) and
  MFU = FLOPs / time / peak FLOP/s. The peak is `--peak_tflops`, else the device's
  bfloat16 dense peak for known GPUs, else (CPU) the rate this machine reaches on a large
  float32 matmul, measured here, so CPU MFU says how close the step comes to the
  machine's best dense arithmetic.

On CPU the steps run in float32 (`--compute_dtype`, default: the config's on GPU/TPU,
float32 on CPU: XLA:CPU emulates bfloat16 convolutions slowly). Data are random arrays of
the real shapes: nothing is read. The table goes to `benchmarks/results/scale_<backend>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from timing import write_table  # noqa: E402

from experiments.configs import celeba64_attributes, celeba_superres, cifar10_classcond  # noqa: E402
from lsdm_jax import parallel, sampling, stage1, stage2  # noqa: E402
from lsdm_jax.data.tasks import make_task  # noqa: E402

CONFIGS = {
  "cifar10_classcond": (cifar10_classcond, (32, 32, 3), 10, 0),
  "celeba64_attributes": (celeba64_attributes, (64, 64, 3), 0, 4),
  "celeba_superres": (celeba_superres, (64, 64, 3), 0, 4),
}
# bfloat16 dense peak FLOP/s by device kind (vendor data sheets, without sparsity).
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12}
GB = 1e9


def matmul_peak(n: int = 2048, calls: int = 5) -> float:
  """FLOP/s of an n x n float32 matmul on the default device."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  t = time.perf_counter()
  for _ in range(calls):
    jax.block_until_ready(f(a))
  return 2 * n**3 * calls / (time.perf_counter() - t)


def device_peak(override: float) -> tuple[float, str]:
  if override > 0:
    return override * 1e12, "--peak_tflops"
  kind = jax.devices()[0].device_kind
  for name, peak in PEAKS.items():
    if name in kind:
      return peak, f"{kind} bf16 data sheet"
  return matmul_peak(), "measured f32 matmul"


def analyse(compiled) -> tuple[float, float]:
  """(FLOPs, peak bytes) of a compiled program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  m = compiled.memory_analysis()
  peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  return float(cost.get("flops", float("nan"))), float(peak - m.alias_size_in_bytes)


def timed(fn, args, calls: int) -> float:
  """Seconds per call after one compiling call; NaN (not timed) when `calls` is 0."""
  if calls == 0:
    return float("nan")
  out = fn(*args)
  jax.block_until_ready(out)
  args = (out[0], *args[1:])
  t = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
    jax.block_until_ready(out)
    args = (out[0], *args[1:])
  return (time.perf_counter() - t) / calls


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def measure(name: str, variant: str, compute_dtype: str, calls: int) -> dict:
  module, image_shape, num_classes, num_attributes = CONFIGS[name]
  config = module.get_config(variant)
  config.compute_dtype = compute_dtype
  if variant == "tiny":
    image_shape = (16, 16, 3) if name.startswith("celeba") else image_shape
  mesh = parallel.make_mesh(1, 1)
  rng = np.random.default_rng(0)
  row = {"config": f"{name}:{variant}", "dtype": compute_dtype}

  # Stage 1.
  s1 = config.stage1
  model = stage1.make_model(s1, image_shape, compute_dtype)
  init = functools.partial(stage1.init_state, model, jax.random.key(0), s1, image_shape)
  state, shardings = parallel.create_sharded(init, mesh)
  tx = stage1.make_optimizer(s1, state.params)
  disc = state.params.get("disc", {})
  row["params_stage1"] = count(state.params) - count(disc)
  row["params_disc"] = count(disc)
  step = stage1.make_train_step(model, tx, s1, mesh, shardings, jax.random.key(1))
  images = jnp.asarray(rng.uniform(size=(s1.batch_size, *image_shape)), jnp.float32)
  # Past disc_start, so the discriminator's share is counted and timed.
  state = state.replace(
    step=jax.device_put(jnp.asarray(s1.disc_start, jnp.int32), state.step.sharding)
  )
  compiled = step.lower(state, images).compile()
  row["flops_stage1"], row["mem_stage1"] = analyse(compiled)
  row["sec_stage1"] = timed(step, (state, images), calls)
  del state

  # Stage 2, one generator update per call.
  config.stage2.steps_per_call = 1
  task = make_task(config.task.name, image_shape, num_classes, config.task.factor, num_attributes)
  d, shape = model.latent_dim, model.latent_shape
  n = 4096
  if task.cond_kind == "label":
    x = (np.arange(n) % num_classes).astype(np.int32)
  elif task.cond_kind == "attributes":
    x = rng.integers(0, 2, (n, num_attributes)).astype(np.float32)
  else:
    x = rng.uniform(size=(n, *task.cond_shape)).astype(np.float32)
  data = {
    "x": x,
    "z": rng.standard_normal((n, d)).astype(np.float32),
    "z_unpaired": rng.standard_normal((8, d)).astype(np.float32),
  }
  s2 = stage2.Stage2(config, task, d, mesh, latent_shape=shape)
  state2, shardings2 = parallel.create_sharded(lambda: s2.init_state(x[:1]), mesh)
  row["params_stage2"] = count(state2.params.get("generator")) + sum(
    count(state2.params[c]) for c in s2.critics
  )
  data_sh = {k: parallel.replicated(mesh) for k in data}
  data = jax.device_put(data, data_sh)
  step2 = s2.make_train_step(shardings2, data_sh)
  row["flops_stage2"], row["mem_stage2"] = analyse(step2.lower(state2, data).compile())
  row["sec_stage2"] = timed(step2, (state2, data), calls)

  # Generation: one image, from the FLOPs of a batch of 256.
  gen = sampling.make_generate_fn(s2.generator, model.make_decoder(), config.stage2.noise_dim)
  params = sampling.generation_params(
    stage2.sampling_params(state2.params),
    init().params,
    np.zeros(d, np.float32),
    np.ones(d, np.float32),
  )
  b = 256
  flops, _ = analyse(gen.lower(params, x[:b], jax.random.key(0)).compile())
  row["flops_image"] = flops / b
  return row


def fmt(v: float, unit: float = 1.0, digits: int = 3) -> str:
  return f"{v / unit:.{digits}g}" if math.isfinite(v) else "—"


def pct(v: float) -> str:
  return f"{100 * v:.2g}%" if math.isfinite(v) else "—"


def table(rows: list[dict], peak: float, peak_source: str, quick: bool) -> str:
  backend = jax.default_backend()
  head = [
    f"# Research configs: FLOPs, memory, speed ({backend})",
    "",
    f"`python benchmarks/scale.py{' --quick' if quick else ''}` on "
    f"{jax.devices()[0].device_kind} ({backend}), JAX {jax.__version__}, "
    f"{datetime.date.today().isoformat()}. Peak for MFU: {peak / 1e12:.3g} TFLOP/s "
    f"({peak_source}). Per-device batch = the config's batch; stage 2 per generator "
    "update (n_critic critic updates included).",
    "",
    "| config | dtype | params S1 (+disc) | params S2 | GFLOP S1 step | GFLOP S2 update "
    "| MFLOP / image | mem S1 GB | mem S2 GB | fits 16 / 80 GB | s / S1 step "
    "| s / S2 update | MFU S1 | MFU S2 |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    mem = max(r["mem_stage1"], r["mem_stage2"])
    fits = " / ".join("yes" if mem < 0.9 * cap * GB else "no" for cap in (16, 80))
    head.append(
      f"| {r['config']} | {r['dtype']} | {fmt(r['params_stage1'], 1e6)}M "
      f"(+{fmt(r['params_disc'], 1e6)}M) | {fmt(r['params_stage2'], 1e6)}M "
      f"| {fmt(r['flops_stage1'], 1e9)} | {fmt(r['flops_stage2'], 1e9)} "
      f"| {fmt(r['flops_image'], 1e6)} | {fmt(r['mem_stage1'], GB)} | {fmt(r['mem_stage2'], GB)} "
      f"| {fits} | {fmt(r['sec_stage1'])} | {fmt(r['sec_stage2'])} "
      f"| {pct(r['flops_stage1'] / r['sec_stage1'] / peak)} "
      f"| {pct(r['flops_stage2'] / r['sec_stage2'] / peak)} |"
    )
  return "\n".join(head) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the tiny variants")
  parser.add_argument("--only", default="", help="comma-separated config names")
  parser.add_argument(
    "--calls", type=int, default=1, help="timed calls after the first (0: FLOPs and memory only)"
  )
  parser.add_argument("--compute_dtype", default="", help="default: config's; float32 on CPU")
  parser.add_argument("--peak_tflops", type=float, default=0.0)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
  rows = []
  for name in names:
    config = CONFIGS[name][0].get_config()
    dtype = args.compute_dtype or ("float32" if backend == "cpu" else config.compute_dtype)
    t = time.perf_counter()
    rows.append(measure(name, "tiny" if args.quick else "default", dtype, args.calls))
    print(f"{name}: measured in {time.perf_counter() - t:.0f} s", flush=True)
  peak, source = device_peak(args.peak_tflops)
  out = args.out or pathlib.Path(__file__).parent / "results" / f"scale_{backend}.md"
  write_table(table(rows, peak, source, args.quick), out)


if __name__ == "__main__":
  main()
