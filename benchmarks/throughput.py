"""Throughput on one device: training steps, generation, peak memory and FLOP/s.

    python benchmarks/throughput.py            # the real measurement (idle machine)
    python benchmarks/throughput.py --quick    # tiny models, a few calls: checks it runs

The numbers are only meaningful on an otherwise idle machine: on a loaded one they
measure the load. Models have the default config's sizes (`lsdm_jax.config.base_config()`,
28x28x1 images, 10 classes) with freshly initialised parameters: speed does not depend on
training. Every timing comes after two compiling warm-up calls and waits for each call's
result.

* Stage 1: examples (images) per second of the library's jitted train step
  (`stage1.make_train_step`) at `stage1.batch_size`.
* Stage 2: the critic estimator at batch 256 and n_critic 5, `stage2.steps_per_call`
  generator updates (each with its 5 critic updates) fused in one `lax.scan` call
  (`Stage2.make_train_step`): generator steps per second and paired latents per second,
  with the default config. Settings are compared with each other by
  `benchmarks/stage2_ab.py`, which interleaves them in one process (timing one after the
  other on a shared machine measures the load as much as the setting).
* Generation: images per second of the jitted y = D(G(η, x)) at batch 1,000, and the
  median latency of a batch of 1.
* One step against many: the latent-diffusion baseline
  (`lsdm_jax.baselines.latent_diffusion`, default `config.latent_diffusion`, DDIM) generating the
  same batch of 1,000 images with 10, 50 and 250 denoising steps, decoded by the same D,
  against LSDM's one-step `generate`: the ratio of their times. The decoder alone is
  timed on the same batch too; taking its time off both gives the ratio in latent space
  alone, i.e. DDIM's n denoiser calls against one call of G.
* Peak memory: the process's maximum resident set size (`resource.getrusage`), i.e. the
  high-water mark over everything above.
* FLOP/s: a float32 2048x2048 matmul (2·n³ FLOPs) measured in the same process is the
  reference rate; generating 10,000 images in one call does the FLOPs XLA reports for it
  (`jax.jit(f).lower(...).compile().cost_analysis()`), and their rate is given as a
  fraction of the matmul's.

Writes `benchmarks/results/throughput.md` (or `--out`) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from timing import NUM_CLASSES, stage2_step, time_calls, write_table  # noqa: E402 (benchmarks/timing.py)

from experiments.report import markdown_table
from lsdm_jax import config as config_lib
from lsdm_jax import parallel, sampling, stage1
from lsdm_jax.baselines import latent_diffusion

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "throughput.md"
IMAGE_SHAPE = (28, 28, 1)


def _config(quick: bool):
  c = config_lib.base_config()
  c.stage2.estimator, c.stage2.batch_size, c.stage2.n_critic = "critic", 256, 5
  if quick:
    c.stage1.features, c.stage1.hidden, c.stage1.latent_dim, c.stage1.batch_size = (4,), 16, 4, 16
    s = c.stage2
    s.hidden, s.critic_hidden, s.cond_features, s.noise_dim = (16,), (16,), 8, 4
    s.batch_size, s.steps_per_call, s.n_critic = 16, 2, 2
  return c


def bench_stage1(config, mesh, calls: int) -> tuple[dict, object, object]:
  cfg = config.stage1
  model = stage1.make_model(cfg, IMAGE_SHAPE)
  init = functools.partial(stage1.init_state, model, jax.random.key(0), cfg, IMAGE_SHAPE)
  state, shardings = parallel.create_sharded(init, mesh)
  tx = stage1.make_optimizer(cfg, state.params)
  step = stage1.make_train_step(model, tx, cfg, mesh, shardings, jax.random.key(1))
  images = np.random.default_rng(0).random((cfg.batch_size, *IMAGE_SHAPE), np.float32)
  seconds, state = time_calls(step, state, parallel.global_batch(mesh, images), calls)
  return {"examples_per_s": cfg.batch_size / seconds}, model, state.params


def bench_stage2(config, mesh, calls: int) -> tuple[dict, object, object]:
  cfg = config.stage2
  s2, step, state, data = stage2_step(config, mesh)
  seconds, state = time_calls(step, state, data, calls)
  steps_per_s = cfg.steps_per_call / seconds
  out = {"generator_steps_per_s": steps_per_s, "examples_per_s": cfg.batch_size * steps_per_s}
  return out, s2.generator, state.params["generator"]


def _median_seconds(fn, calls: int) -> float:
  jax.block_until_ready(fn())  # Compiles.
  times = []
  for _ in range(calls):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _flops(jitted, *args) -> float:
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, list | tuple):  # Older JAX: one dict per program.
    analysis = analysis[0]
  return float(analysis["flops"])


def bench_matmul(n: int, calls: int) -> float:
  """FLOP/s of a float32 n×n matmul."""
  keys = jax.random.split(jax.random.key(2))
  a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in keys)
  matmul = jax.jit(jnp.matmul)
  return 2.0 * n**3 / _median_seconds(lambda: matmul(a, b), calls)


def bench_generate(config, autoencoder, ae_params, generator, gen_params, sizes, calls) -> dict:
  decoder = autoencoder.make_decoder()
  generate = sampling.make_generate_fn(generator, decoder, config.stage2.noise_dim)
  d = config.stage1.latent_dim
  params = sampling.generation_params(gen_params, ae_params, jnp.zeros(d), jnp.ones(d))
  key = jax.random.key(3)
  labels = lambda n: jnp.arange(n, dtype=jnp.int32) % NUM_CLASSES
  batch, big = sizes
  x_batch, x_one, x_big = labels(batch), labels(1), labels(big)
  out = {
    "batch": batch,
    "images_per_s": batch / _median_seconds(lambda: generate(params, x_batch, key), calls),
    "latency_1_s": _median_seconds(lambda: generate(params, x_one, key), 5 * calls),
    "big": big,
    "big_flops": _flops(generate, params, x_big, key),
  }
  out["big_seconds"] = _median_seconds(lambda: generate(params, x_big, key), max(1, calls // 2))
  out["batch_seconds"] = batch / out["images_per_s"]
  # The decoder alone on the same batch: the share of generation that latent diffusion
  # pays too, once, whatever its step count.
  decode = jax.jit(lambda p, z: jax.nn.sigmoid(decoder.apply({"params": p}, z)))
  z = jax.random.normal(key, (batch, d))
  out["decode_seconds"] = _median_seconds(lambda: decode(params["decoder"], z), calls)
  return out


def bench_diffusion(config, autoencoder, ae_params, batch, step_counts, calls) -> dict:
  """Seconds for `batch` images from the latent-diffusion baseline, per step count."""
  d = config.stage1.latent_dim
  cfg = config.latent_diffusion
  denoiser = latent_diffusion.make_denoiser(
    d, cond_kind="label", num_classes=NUM_CLASSES, config=cfg
  )
  x = jnp.arange(batch, dtype=jnp.int32) % NUM_CLASSES
  params = denoiser.init(jax.random.key(4), jnp.zeros((1, d)), jnp.zeros(1), x[:1])["params"]
  decoder = autoencoder.make_decoder()
  key = jax.random.key(5)
  out = {}
  for n in step_counts:

    @jax.jit
    def images(params, dec_params, x, key, n=n):
      z = latent_diffusion.sample(denoiser, params, x, key, num_steps=n)
      return jax.nn.sigmoid(decoder.apply({"params": dec_params}, z))

    out[n] = _median_seconds(lambda: images(params, ae_params["decoder"], x, key), calls)
  return out


def run(quick: bool, calls: int) -> dict:
  config = _config(quick)
  mesh = parallel.make_mesh(1, 1)
  s1, autoencoder, ae_params = bench_stage1(config, mesh, calls)
  print(f"stage 1: {s1['examples_per_s']:.0f} images/s", flush=True)
  s2, generator, gen_params = bench_stage2(config, mesh, calls)
  print(f"stage 2: {s2['generator_steps_per_s']:.1f} generator steps/s", flush=True)
  sizes = (100, 1000) if quick else (1000, 10_000)
  gen = bench_generate(config, autoencoder, ae_params, generator, gen_params, sizes, calls)
  print(f"generate: {gen['images_per_s']:.0f} images/s", flush=True)
  steps = (2, 5) if quick else (10, 50, 250)
  diffusion = bench_diffusion(config, autoencoder, ae_params, sizes[0], steps, max(2, calls // 4))
  print("latent diffusion: " + ", ".join(f"{n} steps {s:.3f} s" for n, s in diffusion.items()))
  n = 512 if quick else 2048
  matmul = bench_matmul(n, calls)
  # ru_maxrss is in KiB on Linux, bytes on macOS.
  scale = 1 if sys.platform == "darwin" else 1024
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
  return {
    "config": config,
    "stage1": s1,
    "stage2": s2,
    "generate": gen,
    "diffusion": diffusion,
    "matmul_n": n,
    "matmul_flops_per_s": matmul,
    "peak_bytes": peak,
  }


def _cpu_name() -> str:
  """The CPU's model name (Linux), else what `platform` knows."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def markdown(r: dict, quick: bool) -> str:
  c, s1, s2, g = r["config"], r["stage1"], r["stage2"], r["generate"]
  gen_rate = g["big_flops"] / g["big_seconds"]
  n = r["matmul_n"]
  rows = [
    (
      "stage 1 train step",
      f"{s1['examples_per_s']:,.0f} images/s",
      f"batch {c.stage1.batch_size}, features {tuple(c.stage1.features)}, hidden "
      f"{c.stage1.hidden}, latent {c.stage1.latent_dim}",
    ),
    (
      "stage 2 train step (critic)",
      f"{s2['generator_steps_per_s']:,.1f} generator steps/s "
      f"({s2['examples_per_s']:,.0f} latents/s)",
      f"batch {c.stage2.batch_size}, n_critic {c.stage2.n_critic}, {c.stage2.steps_per_call} "
      f"generator steps per lax.scan call, G {tuple(c.stage2.hidden)}, critic "
      f"{tuple(c.stage2.critic_hidden)} {c.stage2.critic_activation}, penalty on "
      f"{c.stage2.batch_size // c.stage2.gp_stride} of {c.stage2.batch_size} examples",
    ),
    ("generate", f"{g['images_per_s']:,.0f} images/s", f"batch {g['batch']:,}"),
    ("generate, batch 1", f"{1e3 * g['latency_1_s']:.2f} ms", "median latency"),
    (f"matmul {n}²", f"{r['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s", "float32, 2·n³ FLOPs"),
    (
      f"generate {g['big']:,} images",
      f"{gen_rate / 1e9:,.2f} GFLOP/s "
      f"({100 * gen_rate / r['matmul_flops_per_s']:.1f}% of the matmul's)",
      f"{g['big_flops'] / 1e9:,.2f} GFLOP (XLA cost analysis) in {g['big_seconds']:.3f} s",
    ),
  ]
  decode = g["decode_seconds"]
  rows.append(
    (
      "decoder alone",
      f"{1e3 * decode:.2f} ms ({100 * decode / g['batch_seconds']:.0f}% of generate's time)",
      f"batch {g['batch']:,}, the part of generation both methods share",
    )
  )
  for n, seconds in r["diffusion"].items():
    latent_ratio = (seconds - decode) / max(g["batch_seconds"] - decode, 1e-9)
    rows.append(
      (
        f"latent diffusion, {n} steps",
        f"{g['batch'] / seconds:,.0f} images/s ({seconds / g['batch_seconds']:,.0f}x LSDM's time)",
        f"batch {g['batch']:,}, DDIM, default `config.latent_diffusion`, same decoder; "
        f"{latent_ratio:,.0f}x G's time in latent space alone",
      )
    )
  rows.append(("peak memory", f"{r['peak_bytes'] / 2**20:,.0f} MiB", "max RSS of the process"))
  lines = [
    "# Throughput on one device",
    "",
    f"{datetime.date.today().isoformat()}, JAX {jax.__version__}, backend "
    f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU "
    f"core(s) ({_cpu_name()}), {platform.python_implementation()} {platform.python_version()}"
    + (", **--quick (tiny models; not a measurement)**" if quick else ""),
    "",
    f"1-minute load average {r['load'][0]:.1f} at the start and {r['load'][1]:.1f} at the "
    "end (other processes on the same cores slow every rate here).",
    "",
    ("Tiny models" if quick else "Default-config model sizes")
    + ", freshly initialised (see `benchmarks/throughput.py`). "
    "Absolute rates are meaningful only on an otherwise idle machine; the ratios within "
    "the table (latent diffusion against LSDM, generation against the matmul) are timed in "
    "one process and hold up better under load.",
    "",
  ]
  body = [list(r) for r in rows]
  return "\n".join(lines) + "\n" + markdown_table(["what", "rate", "setting"], body, "lrl")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny models, few calls")
  parser.add_argument("--calls", type=int, default=None, help="timed calls per setting")
  parser.add_argument("--out", default=str(RESULTS), help="markdown file to write")
  args = parser.parse_args(argv)
  quick = args.quick
  load_before = os.getloadavg()[0]
  result = run(quick, args.calls or (2 if quick else 20))
  result["load"] = (load_before, os.getloadavg()[0])
  text = markdown(result, quick)
  write_table(text, args.out)


if __name__ == "__main__":
  main()
