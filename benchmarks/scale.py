"""FLOPs, memory and speed of the research configs at their per-device batch.

    python benchmarks/scale.py              # the research configs on 8 devices (minutes on a CPU)
    python benchmarks/scale.py --devices=1  # the whole global batch on one device
    python benchmarks/scale.py --quick      # their tiny variants: checks it runs

Each config (`cifar10_classcond.py`, `celeba64_attributes.py`, `celeba_superres.py`) states
global batches. `--devices N` splits them over N data-parallel devices (default 8, one
host of eight accelerators, for the research configs; 1 for the tiny variants), and one
device's share is analysed and timed here, on one device: global batch / N rows of stage
1 and of stage 2. The gradient all-reduce of N > 1 devices is not in it. For each config:

* parameters of stage 1 (autoencoder and discriminator) and stage 2 (generator, critic);
* FLOPs of one device's stage-1 step, stage-2 generator update (with its n_critic critic
  updates) and one generated image, from XLA's cost analysis of the lowered programs with
  every loop unrolled (`flops`: XLA counts one iteration of a loop, so the critic's
  `lax.scan` of n_critic updates would count once);
* peak device memory of each step (compiled memory analysis of the program this backend
  runs: arguments + outputs + temporaries − donated aliases), and whether it fits a 16 GB
  and an 80 GB device (with 10% headroom);
* measured seconds per step (one compiling call, then the mean of `--calls` calls;
  `--calls=0` skips the timing, for a slow backend) and
  MFU = FLOPs / time / peak FLOP/s. The peak is `--peak_tflops`, else the device's
  bfloat16 dense peak for known GPUs, else (CPU) the rate this machine reaches on a large
  float32 matmul, measured here, so CPU MFU says how close the step comes to the
  machine's best dense arithmetic.

On CPU the steps run in float32 (`--compute_dtype`, default: the config's on GPU/TPU,
float32 on CPU: XLA:CPU emulates bfloat16 convolutions slowly). Data are random arrays of
the real shapes: nothing is read. The table goes to `benchmarks/results/scale_<backend>.md`
(`scale_<backend>_tiny.md` with `--quick`; `--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from timing import write_table  # noqa: E402

from experiments.configs import celeba64_attributes, celeba_superres, cifar10_classcond  # noqa: E402
from lsdm_jax import parallel, sampling, stage1, stage2  # noqa: E402
from lsdm_jax.data.tasks import make_task  # noqa: E402
from lsdm_jax.metrics import lpips  # noqa: E402

CONFIGS = {
  "cifar10_classcond": (cifar10_classcond, (32, 32, 3), 10, 0),
  "celeba64_attributes": (celeba64_attributes, (64, 64, 3), 0, 4),
  "celeba_superres": (celeba_superres, (64, 64, 3), 0, 4),
}
# Data-parallel devices the global batches are split over, by variant: one host of eight
# accelerators for the research configs; the tiny variants' batch of 8 on one device.
DEVICES = {"default": 8, "tiny": 1}
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


def flops(lowered) -> float:
  """XLA's FLOP count of a lowered (not yet compiled) program.

  XLA's cost analysis counts a loop's body once, whatever its trip count, so lower the
  program with its loops unrolled (`stage2_flops`) to count every iteration.
  """
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("flops", float("nan")))


def peak_bytes(compiled) -> float:
  """Peak device memory of a compiled program: arguments + outputs + temporaries, less
  the donated arguments that outputs reuse."""
  m = compiled.memory_analysis()
  peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  return float(peak - m.alias_size_in_bytes)


def abstract(tree, shardings):
  """`tree`'s leaves as `jax.ShapeDtypeStruct`s placed by `shardings`: arguments to
  lower a program without allocating them."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


def timed(fn, args, calls: int) -> float:
  """Seconds per call of `fn(state, *rest)` → (state, ...) after one warm-up call; NaN
  (not timed) when `calls` is 0."""
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


def research_config(name: str, variant: str, compute_dtype: str, devices: int):
  """(config with one device's batches, image shape, num_classes, num_attributes).

  Raises:
    ValueError: a global batch does not split over `devices`.
  """
  module, image_shape, num_classes, num_attributes = CONFIGS[name]
  config = module.get_config(variant)
  config.compute_dtype = compute_dtype
  if variant == "tiny" and name.startswith("celeba"):
    image_shape = (config.data.image_size,) * 2 + (3,)
  for section in ("stage1", "stage2"):
    batch = config[section].batch_size
    if devices < 1 or batch % devices:
      raise ValueError(
        f"{name}: {section}.batch_size={batch} does not split over {devices} devices"
      )
    config[section].batch_size = batch // devices
  return config, image_shape, num_classes, num_attributes


def stage1_program(config, image_shape, mesh):
  """(model, jitted step, abstract state, abstract images, init) of stage 1 at
  `config.stage1.batch_size` rows."""
  s1 = config.stage1
  model = stage1.make_model(s1, image_shape, config.compute_dtype)
  init = functools.partial(stage1.init_state, model, jax.random.key(0), s1, image_shape)
  shapes = jax.eval_shape(init)
  shardings = parallel.param_shardings(mesh, shapes)
  tx = stage1.make_optimizer(s1, shapes.params)
  step = stage1.make_train_step(
    model, tx, s1, mesh, shardings, jax.random.key(1), random_perceptual(s1, config.compute_dtype)
  )
  images = jax.ShapeDtypeStruct(  # As stage 1 reads them: uint8, made float on the device.
    (s1.batch_size, *image_shape), jnp.uint8, sharding=parallel.data_sharding(mesh)
  )
  return model, step, abstract(shapes, shardings), images, (init, shardings)


def random_perceptual(s1, compute_dtype: str):
  """An LPIPS distance of random weights where the config asks for one (same FLOPs and
  memory as the exported weights), else None."""
  if s1.perceptual_weight <= 0:
    return None
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  params = lpips.LPIPS().init(jax.random.key(2), x, x)["params"]
  return lpips.LPIPSDistance(params, jnp.dtype(compute_dtype))


def stage1_flops(name: str, variant: str = "default", batch: int = 0) -> float:
  """FLOPs of one stage-1 step of config `name` at `batch` rows (default: the global
  batch) on one device, float32 (the count does not depend on the compute dtype)."""
  config, image_shape, _, _ = research_config(name, variant, "float32", 1)
  if batch:
    config.stage1.batch_size = batch
  _, step, state, images, _ = stage1_program(config, image_shape, parallel.make_mesh(1, 1))
  return flops(step.lower(state, images))


@dataclasses.dataclass
class Stage2Program:
  """A `stage2.Stage2` and what it takes to lower its train step without allocating.

  Attributes:
    s2: the stage-2 models and step.
    init: () → the initial train state.
    shardings, data_shardings: of the state and of the data.
    state, data: their abstract values (`jax.ShapeDtypeStruct`s).
    values: the data as numpy arrays.
  """

  s2: stage2.Stage2
  init: Callable
  shardings: object
  data_shardings: dict
  state: object
  data: dict
  values: dict


def stage2_program(config, image_shape, num_classes, num_attributes, model, mesh, rng):
  """Stage 2 of `config` on the latents of stage-1 `model`, with random data of the real
  shapes (4,096 conditions and latents)."""
  task = make_task(config.task.name, image_shape, num_classes, config.task.factor, num_attributes)
  d, n = model.latent_dim, 4096
  if task.cond_kind == "label":
    x = (np.arange(n) % num_classes).astype(np.int32)
  elif task.cond_kind == "attributes":
    x = rng.integers(0, 2, (n, num_attributes)).astype(np.float32)
  else:
    x = rng.uniform(size=(n, *task.cond_shape)).astype(np.float32)
  values = {
    "x": x,
    "z": rng.standard_normal((n, d)).astype(np.float32),
    "z_unpaired": rng.standard_normal((8, d)).astype(np.float32),
  }
  s2 = stage2.Stage2(config, task, d, mesh, latent_shape=model.latent_shape)

  def init():
    return s2.init_state(x[:1])

  shapes = jax.eval_shape(init)
  shardings = parallel.param_shardings(mesh, shapes)
  data_shardings = {k: parallel.replicated(mesh) for k in values}
  return Stage2Program(
    s2,
    init,
    shardings,
    data_shardings,
    abstract(shapes, shardings),
    abstract(values, data_shardings),
    values,
  )


def stage2_flops(p: Stage2Program) -> float:
  """FLOPs of one call of the train step (steps_per_call generator updates, each after
  n_critic critic updates), every iteration counted: lowered with both scans unrolled,
  whatever this backend runs."""
  unroll = p.s2.unroll
  p.s2.unroll = True
  try:
    return flops(p.s2.make_train_step(p.shardings, p.data_shardings).lower(p.state, p.data))
  finally:
    p.s2.unroll = unroll


def measure(name: str, variant: str, compute_dtype: str, calls: int, devices: int) -> dict:
  config, image_shape, num_classes, num_attributes = research_config(
    name, variant, compute_dtype, devices
  )
  mesh = parallel.make_mesh(1, 1)
  rng = np.random.default_rng(0)
  row = {"config": f"{name}:{variant}", "dtype": compute_dtype, "devices": devices}
  row["batch_stage1"] = config.stage1.batch_size
  row["batch_stage2"] = config.stage2.batch_size

  # Stage 1.
  s1 = config.stage1
  model, step, state_spec, images_spec, (init, shardings) = stage1_program(
    config, image_shape, mesh
  )
  disc = state_spec.params.get("disc", {})
  row["params_stage1"] = count(state_spec.params) - count(disc)
  row["params_disc"] = count(disc)
  lowered = step.lower(state_spec, images_spec)
  row["flops_stage1"] = flops(lowered)
  compiled = lowered.compile()
  row["mem_stage1"] = peak_bytes(compiled)
  if calls:
    state = jax.jit(init, out_shardings=shardings)()
    images = jax.device_put(
      rng.integers(0, 256, size=images_spec.shape, dtype=np.uint8), images_spec.sharding
    )
    # Past disc_start, so the discriminator's update takes effect as in a late step.
    state = state.replace(
      step=jax.device_put(jnp.asarray(s1.disc_start, jnp.int32), state.step.sharding)
    )
    row["sec_stage1"] = timed(step, (state, images), calls)  # Its perceptual net bound.
    del state
  else:
    row["sec_stage1"] = float("nan")

  # Stage 2, one generator update per call.
  config.stage2.steps_per_call = 1
  p2 = stage2_program(config, image_shape, num_classes, num_attributes, model, mesh, rng)
  s2 = p2.s2
  row["params_stage2"] = count(p2.state.params.get("generator")) + sum(
    count(p2.state.params[c]) for c in s2.critics
  )
  row["flops_stage2"] = stage2_flops(p2)
  compiled = s2.make_train_step(p2.shardings, p2.data_shardings).lower(p2.state, p2.data).compile()
  row["mem_stage2"] = peak_bytes(compiled)
  if calls:
    state2 = jax.jit(p2.init, out_shardings=p2.shardings)()
    data = jax.device_put(p2.values, p2.data_shardings)
    row["sec_stage2"] = timed(compiled, (state2, data), calls)
  else:
    row["sec_stage2"] = float("nan")

  # Generation: one image, from the FLOPs of a batch of 256.
  gen = sampling.make_generate_fn(s2.generator, model.make_decoder(), config.stage2.noise_dim)
  params = jax.eval_shape(
    lambda: sampling.generation_params(
      stage2.sampling_params(p2.init().params),
      init().params,
      jnp.zeros(model.latent_dim, jnp.float32),
      jnp.ones(model.latent_dim, jnp.float32),
    )
  )
  b = 256
  row["flops_image"] = flops(gen.lower(params, p2.values["x"][:b], jax.random.key(0))) / b
  return row


def fmt(v: float, unit: float = 1.0, digits: int = 3) -> str:
  return f"{v / unit:.{digits}g}" if math.isfinite(v) else "—"


def pct(v: float) -> str:
  return f"{100 * v:.2g}%" if math.isfinite(v) else "—"


def table(rows: list[dict], peak: float, peak_source: str, command: str) -> str:
  backend = jax.default_backend()
  head = [
    f"# Research configs: FLOPs, memory, speed ({backend})",
    "",
    f"`{command}` on {jax.devices()[0].device_kind} ({backend}), JAX {jax.__version__}, "
    f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f} at the end. "
    f"Peak for MFU: {peak / 1e12:.3g} TFLOP/s "
    f"({peak_source}). Each config's global batches are split over `devices` data-parallel "
    "devices; one device's share (its batch: global / devices) is analysed and timed on one "
    "device, without the gradient all-reduce. FLOPs: XLA's cost analysis of the lowered "
    "programs with every loop unrolled; stage 2 per generator update, its n_critic critic "
    "updates included. Memory: the compiled program this backend runs.",
    "",
    "| config | dtype | devices | batch S1 global / per device | batch S2 global / per device "
    "| params S1 (+disc) | params S2 | GFLOP S1 step | GFLOP S2 update "
    "| MFLOP / image | mem S1 GB | mem S2 GB | fits 16 / 80 GB | s / S1 step "
    "| s / S2 update | MFU S1 | MFU S2 |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    mem = max(r["mem_stage1"], r["mem_stage2"])
    fits = " / ".join("yes" if mem < 0.9 * cap * GB else "no" for cap in (16, 80))
    n = r["devices"]
    head.append(
      f"| {r['config']} | {r['dtype']} | {n} | {r['batch_stage1'] * n} / {r['batch_stage1']} "
      f"| {r['batch_stage2'] * n} / {r['batch_stage2']} | {fmt(r['params_stage1'], 1e6)}M "
      f"(+{fmt(r['params_disc'], 1e6)}M) | {fmt(r['params_stage2'], 1e6)}M "
      f"| {fmt(r['flops_stage1'], 1e9)} | {fmt(r['flops_stage2'], 1e9)} "
      f"| {fmt(r['flops_image'], 1e6)} | {fmt(r['mem_stage1'], GB)} | {fmt(r['mem_stage2'], GB)} "
      f"| {fits} | {fmt(r['sec_stage1'])} | {fmt(r['sec_stage2'])} "
      f"| {pct(r['flops_stage1'] / r['sec_stage1'] / peak)} "
      f"| {pct(r['flops_stage2'] / r['sec_stage2'] / peak)} |"
    )
  return "\n".join(head) + "\n"


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the tiny variants")
  parser.add_argument("--only", default="", help="comma-separated config names")
  parser.add_argument(
    "--calls", type=int, default=1, help="timed calls after the first (0: FLOPs and memory only)"
  )
  parser.add_argument(
    "--devices", type=int, default=0, help="devices the global batches split over (0: 8, tiny 1)"
  )
  parser.add_argument("--compute_dtype", default="", help="default: config's; float32 on CPU")
  parser.add_argument("--peak_tflops", type=float, default=0.0)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  variant = "tiny" if args.quick else "default"
  devices = args.devices or DEVICES[variant]
  names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
  rows = []
  for name in names:
    config = CONFIGS[name][0].get_config()
    dtype = args.compute_dtype or ("float32" if backend == "cpu" else config.compute_dtype)
    t = time.perf_counter()
    try:
      rows.append(measure(name, variant, dtype, args.calls, devices))
    except ValueError as e:
      parser.error(str(e))
    print(f"{name}: measured in {time.perf_counter() - t:.0f} s", flush=True)
  peak, source = device_peak(args.peak_tflops)
  suffix = "_tiny" if args.quick else ""
  out = args.out or pathlib.Path(__file__).parent / "results" / f"scale_{backend}{suffix}.md"
  shown = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--out")]
  command = " ".join(["python benchmarks/scale.py", *shown])
  write_table(table(rows, peak, source, command), out)
  return rows


if __name__ == "__main__":
  main()
