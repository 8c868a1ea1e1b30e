"""The Python steps of benchmarks/accelerator.sh: one GPU's measurements, one table.

    python benchmarks/accelerator.py device  --dir=D   # JAX, the device; fails without a GPU
    python benchmarks/accelerator.py scale NAME --dir=D  # scale.py's row of research config NAME
    python benchmarks/accelerator.py mock    --dir=D   # CIFAR-10 mock run, both stages, generation
    python benchmarks/accelerator.py report  --dir=D --out=FILE  # the table; non-zero on failures

Each step writes its rows as JSON into D; `report` joins them, and the steps the shell
script recorded as failed or skipped (D/status.txt), into one markdown table. With
`--dry-run` every step runs at the tiny sizes on whatever device there is (the CPU here),
so the whole script is checked before a GPU's minutes are spent on it.

* `scale NAME`: `scale.measure` at the config's real sizes with its global batches on one
  device (`--devices=1`), in its compute dtype (bfloat16), each step timed over 5 calls:
  FLOPs (lowered, loops unrolled), compiled peak memory, seconds, MFU against the H200's
  989 TFLOP/s.
* `mock`: `cifar10_classcond` at its real model size on `tfds.testing.mock_data` (random
  32x32 images and labels, 2,048 a split; 1,000 paired and 1,000 unpaired), 300 stage-1
  steps and 200 stage-2 updates (5 critic updates each) through `train.train_and_evaluate`
  (evaluation off): whether every logged loss is finite, steps per second between the first
  and the last log line (compilation excluded), MFU from `scale`'s FLOPs, the device's peak
  memory; then generation from the saved run: 10,000 images through `LSDM.generate` (to
  host memory) and the jitted generator on device in batches of 1,000.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import scale  # noqa: E402
from timing import write_table  # noqa: E402

import lsdm_jax  # noqa: E402
from experiments.configs import cifar10_classcond  # noqa: E402
from lsdm_jax import parallel, train  # noqa: E402
from lsdm_jax.metrics import lpips  # noqa: E402

GB = 1e9


def save(directory: pathlib.Path, name: str, rows: list[dict]) -> None:
  (directory / f"{name}.json").write_text(json.dumps(rows, indent=1))
  print(json.dumps(rows, indent=1), flush=True)


def peak_flops() -> float:
  """The MFU denominator: the device's bfloat16 data-sheet peak, or (dry run on a CPU)
  this machine's float32 matmul rate."""
  return scale.device_peak(0.0)[0]


def device_peak_memory() -> float:
  """Peak bytes the first device's allocator has held (NaN where it keeps no count)."""
  stats = jax.devices()[0].memory_stats() or {}
  return float(stats.get("peak_bytes_in_use", float("nan")))


def step_device(args) -> None:
  device = jax.devices()[0]
  row = {
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "count": jax.device_count(),
    "date": datetime.date.today().isoformat(),
  }
  save(args.dir, "device", [row])
  if not args.dry_run and jax.default_backend() != "gpu":
    sys.exit(f"expected a GPU, JAX runs on {jax.default_backend()}")


def step_scale(args) -> None:
  variant = "tiny" if args.dry_run else "default"
  config = scale.CONFIGS[args.name][0].get_config(variant)
  dtype = "float32" if jax.default_backend() == "cpu" else config.compute_dtype
  row = scale.measure(args.name, variant, dtype, calls=2 if args.dry_run else 5, devices=1)
  row["peak_flops"] = peak_flops()
  save(args.dir, f"scale_{args.name}", [row])


def logged(workdir: pathlib.Path, stage: str) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r.get("stage") == stage]


def steady_rate(rows: list[dict]) -> float:
  """Steps per second between the first and the last log line: `loop.run` logs the mean
  rate since the start (compilation included), so the elapsed time is step / rate."""
  if len(rows) < 2:
    return float("nan")
  (s0, r0), (s1, r1) = ((r["step"], r["steps_per_sec"]) for r in (rows[0], rows[-1]))
  return (s1 - s0) / (s1 / r1 - s0 / r0)


def mock_config(dry_run: bool, data_dir: str):
  """cifar10_classcond at its real model size (tiny with `dry_run`) for a short mock run."""
  config = cifar10_classcond.get_config("tiny" if dry_run else "default")
  if jax.default_backend() == "cpu":
    config.compute_dtype = "float32"
  config.data.data_dir = data_dir
  config.eval.enabled = False
  if not dry_run:
    config.data.n_paired, config.data.n_unpaired = 1000, 1000
    s1, s2 = config.stage1, config.stage2
    s1.steps, s1.log_every, s1.save_every = 300, 50, 300
    s1.disc_start = 151  # The second half with the discriminator at its adaptive weight.
    # LPIPS of random weights: the exported file's FLOPs and memory (no network here).
    weights = pathlib.Path(data_dir).parent / "lpips_random.npz"
    weights.parent.mkdir(parents=True, exist_ok=True)
    np.savez(weights, **lpips.random_state_dict(0))
    s1.lpips_weights = str(weights)
    s2.steps, s2.steps_per_call, s2.log_every, s2.save_every = 200, 20, 40, 200
  return config


def step_mock(args) -> None:
  import tensorflow_datasets as tfds  # Here only: the other steps need no TFDS.

  peak = peak_flops()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    config = mock_config(args.dry_run, str(pathlib.Path(tmp) / "tfds"))
    workdir = pathlib.Path(tmp) / "run"
    t = time.perf_counter()
    with tfds.testing.mock_data(num_examples=40 if args.dry_run else 2048):
      train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - t
    memory = device_peak_memory()
    s1, s2 = config.stage1, config.stage2
    variant = "tiny" if args.dry_run else "default"
    flops = {
      "stage1": scale.stage1_flops("cifar10_classcond", variant, s1.batch_size),
      "stage2": stage2_update_flops(variant),
    }
    for stage, section, key in (("stage1", s1, "loss"), ("stage2", s2, "gen_loss")):
      history = logged(workdir, stage)
      losses = [r[key] for r in history]
      rate = steady_rate(history)
      rows.append(
        {
          "what": f"mock run, {stage} ({section.steps} steps)",
          "config": f"cifar10_classcond:{variant}",
          "dtype": config.compute_dtype,
          "batch": section.batch_size,
          "flops": flops[stage],
          "seconds": 1 / rate,
          "rate": rate,
          "unit": "steps/s",
          "mfu": flops[stage] * rate / peak,
          "memory": memory,
          "check": "finite losses"
          if losses and all(map(math.isfinite, losses))
          else f"NON-FINITE: {losses}",
          "wall": wall,
        }
      )
    rows.extend(generation_rows(workdir, variant, peak, config.compute_dtype))
  save(args.dir, "mock", rows)
  if any(r["check"].startswith("NON-FINITE") for r in rows):
    sys.exit("a loss was not finite")


def stage2_update_flops(variant: str) -> float:
  """`scale`'s FLOPs of one stage-2 generator update of cifar10_classcond (one device)."""
  config, shape, classes, attributes = scale.research_config(
    "cifar10_classcond", variant, "float32", 1
  )
  config.stage2.steps_per_call = 1
  mesh = parallel.make_mesh(1, 1)
  model, *_ = scale.stage1_program(config, shape, mesh)
  rng = np.random.default_rng(0)
  return scale.stage2_flops(
    scale.stage2_program(config, shape, classes, attributes, model, mesh, rng)
  )


def generation_rows(workdir, variant: str, peak: float, dtype: str) -> list[dict]:
  """Images per second: `LSDM.generate` to host memory, and the jitted generator alone."""
  model = lsdm_jax.load(workdir)
  n, batch = (64, 16) if variant == "tiny" else (10_000, 1000)
  labels = np.arange(n) % 10
  key = jax.random.key(0)
  model.generate(labels[:batch], key, batch_size=batch)  # Compiles.
  t = time.perf_counter()
  images = model.generate(labels, key, batch_size=batch)
  host = n / (time.perf_counter() - t)
  fn, x = model.generate_fn, jax.numpy.asarray(labels[:batch], jax.numpy.int32)
  jax.block_until_ready(fn(model.params, x, key))
  t, calls = time.perf_counter(), n // batch
  for i in range(calls):
    out = fn(model.params, x, jax.random.fold_in(key, i))
  jax.block_until_ready(out)
  device = calls * batch / (time.perf_counter() - t)
  lowered = fn.lower(model.params, x, key)
  per_image = scale.flops(lowered) / batch
  finite = bool(np.all(np.isfinite(images))) and images.min() >= 0 and images.max() <= 1
  common = {"config": f"cifar10_classcond:{variant}", "dtype": dtype, "flops": per_image}
  check = "images in [0, 1]" if finite else "IMAGES OUT OF [0, 1]"
  return [
    {
      **common,
      "what": f"generate {n:,} images (LSDM.generate, to host)",
      "batch": batch,
      "seconds": 1 / host,
      "rate": host,
      "unit": "images/s",
      "mfu": per_image * host / peak,
      "memory": float("nan"),
      "check": check,
    },
    {
      **common,
      "what": f"generate on device ({calls} calls of {batch})",
      "batch": batch,
      "seconds": 1 / device,
      "rate": device,
      "unit": "images/s",
      "mfu": per_image * device / peak,
      "memory": device_peak_memory(),
      "check": check,
    },
  ]


def fmt(v, unit: float = 1.0, digits: int = 3) -> str:
  return f"{v / unit:.{digits}g}" if isinstance(v, int | float) and math.isfinite(v) else "—"


def pct(v) -> str:
  return f"{100 * v:.2g}%" if isinstance(v, int | float) and math.isfinite(v) else "—"


def scale_rows(row: dict) -> list[dict]:
  """`scale.measure`'s row as the table's rows: the stage-1 step and the stage-2 update."""
  out = []
  for stage, what in (("stage1", "scale.py, stage-1 step"), ("stage2", "scale.py, stage-2 update")):
    seconds = row[f"sec_{stage}"]
    out.append(
      {
        "what": what,
        "config": row["config"],
        "dtype": row["dtype"],
        "batch": row[f"batch_{stage}"],
        "flops": row[f"flops_{stage}"],
        "seconds": seconds,
        "rate": 1 / seconds,
        "unit": "steps/s",
        "mfu": row[f"flops_{stage}"] / seconds / row["peak_flops"],
        "memory": row[f"mem_{stage}"],
        "check": "memory: compiled analysis",
      }
    )
  return out


def step_report(args) -> None:
  directory = args.dir
  device = (
    json.loads((directory / "device.json").read_text())[0]
    if (directory / "device.json").exists()
    else {"jax": jax.__version__, "device": "?", "date": "?"}
  )
  rows = []
  for name in scale.CONFIGS:
    if (directory / f"scale_{name}.json").exists():
      rows.extend(scale_rows(json.loads((directory / f"scale_{name}.json").read_text())[0]))
  if (directory / "mock.json").exists():
    rows.extend(json.loads((directory / "mock.json").read_text()))
  status = []
  if (directory / "status.txt").exists():
    status = [
      line.split(maxsplit=2) for line in (directory / "status.txt").read_text().splitlines()
    ]
  failed = [(name, rc, note) for name, rc, note in status if rc != "0"]
  lines = [
    f"# One GPU: research configs' steps, a mock run, generation ({device['device']})",
    "",
    f"`bash benchmarks/accelerator.sh{' --dry-run' if args.dry_run else ''}` on "
    f"{device['device']} ({device.get('backend', '?')}), JAX {device['jax']}, {device['date']}. "
    "scale.py rows: one config's global batch on one device, FLOPs from XLA's count of the "
    "lowered program with loops unrolled, memory from the compiled program's analysis; mock "
    "rows: `tfds.testing.mock_data` through `train.train_and_evaluate`, steps/s between the "
    "first and last log line, memory the device allocator's peak in that process. MFU "
    "against the device's bfloat16 data-sheet peak (a CPU: its measured float32 matmul "
    "rate).",
    "",
    "| what | config | dtype | batch | GFLOP / step or image | s / step or image "
    "| rate | MFU | peak memory GB | check |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['what']} | {r['config']} | {r['dtype']} | {r['batch']} | {fmt(r['flops'], 1e9)} "
      f"| {fmt(r['seconds'])} | {fmt(r['rate'])} {r['unit']} | {pct(r['mfu'])} "
      f"| {fmt(r['memory'], GB)} | {r['check']} |"
    )
  for name, _, note in failed:
    lines.append(f"| {name} | — | — | — | — | — | — | — | — | FAILED: {note} |")
  write_table("\n".join(lines) + "\n", args.out)
  if failed:
    sys.exit(f"{len(failed)} step(s) failed: {', '.join(n for n, _, _ in failed)}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=["device", "scale", "mock", "report"])
  parser.add_argument("name", nargs="?", default="", help="scale: the config")
  parser.add_argument("--dir", type=pathlib.Path, required=True, help="the steps' JSON rows")
  parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device")
  parser.add_argument("--out", default="", help="report: the table")
  args = parser.parse_args(argv)
  args.dir.mkdir(parents=True, exist_ok=True)
  {"device": step_device, "scale": step_scale, "mock": step_mock, "report": step_report}[args.step](
    args
  )


if __name__ == "__main__":
  main()
