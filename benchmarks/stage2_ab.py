"""Stage-2 settings against each other, interleaved in one process (A B A B ...).

    python benchmarks/stage2_ab.py                 # gp_stride=2 (default) against 1
    python benchmarks/stage2_ab.py --rounds=15 --calls=5
    python benchmarks/stage2_ab.py --variant=critic_activation=leaky_relu
    python benchmarks/stage2_ab.py --quick         # tiny models: checks it runs

Each variant is the library's jitted stage-2 train step (`Stage2.make_train_step`, the
critic estimator, `stage2.steps_per_call` generator updates with `n_critic` critic
updates each, fused in one `lax.scan`) at the default config's sizes, compiled and warmed
up once. Then, for `--rounds` rounds, every variant runs `--calls` calls in turn (the
order alternates between rounds so no variant always goes first) and each block is timed
with a wait on every call.

Why interleave: on a shared or loaded machine the load changes over minutes, and timing
one setting after the other measures the load as much as the setting. Interleaved short
blocks see the same load, so their *ratio within a round* is a fair comparison even when
the absolute rates are not. The table gives, per variant, the median and min–max of its
generator steps per second over the rounds, and, against the first variant, the median
and min–max of the per-round ratio; "faster in k of n rounds" says how reliable the
difference is.

Writes `benchmarks/results/stage2_ab.md` (or `--out`) and prints it.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import pathlib
import platform
import statistics
import time

import jax
from timing import stage2_step, write_table  # benchmarks/timing.py, the script's own folder

from experiments.report import markdown_table
from lsdm_jax import config as config_lib
from lsdm_jax import parallel

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "stage2_ab.md"


def _config(quick: bool):
  c = config_lib.base_config()
  c.stage2.estimator = "critic"
  if quick:
    c.stage1.latent_dim = 4
    s = c.stage2
    s.hidden, s.critic_hidden, s.cond_features, s.noise_dim = (16,), (16,), 8, 4
    s.batch_size, s.steps_per_call, s.n_critic = 16, 2, 2
  return c


def _parse(variant: str) -> tuple[str, object]:
  field, _, value = variant.partition("=")
  try:
    return field, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return field, value


def make_step(config, mesh):
  """A warmed-up `(call, steps_per_call)` for `config`'s stage-2 train step."""
  _, step, state, data = stage2_step(config, mesh)
  box = [state]

  def call():
    box[0], _ = step(box[0], data)
    jax.block_until_ready(box[0])

  for _ in range(2):  # Compiles, then one more warm-up call.
    call()
  return call, config.stage2.steps_per_call


def measure(variants, quick: bool, rounds: int, calls: int) -> dict:
  """Generator steps per second of each variant, per round."""
  mesh = parallel.make_mesh(1, 1)
  steps = {}
  for name, changes in variants:
    config = _config(quick)
    for field, value in changes:
      config.stage2[field] = value
    config_lib.validate(config)
    steps[name] = make_step(config, mesh)
  rates = {name: [] for name, _ in variants}
  names = [name for name, _ in variants]
  for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for name in order:
      call, per_call = steps[name]
      t = time.perf_counter()
      for _ in range(calls):
        call()
      rates[name].append(calls * per_call / (time.perf_counter() - t))
    print(
      f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names),
      flush=True,
    )
  return rates


def _quartiles(xs):
  q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
  return q[0], q[1], q[2]


def markdown(variants, rates, quick: bool, rounds: int, calls: int, config, load) -> str:
  names = [name for name, _ in variants]
  base = rates[names[0]]
  c = config.stage2
  lines = [
    "# Stage-2 settings, interleaved",
    "",
    f"{datetime.date.today().isoformat()}, JAX {jax.__version__}, backend "
    f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU "
    f"core(s), {platform.python_implementation()} {platform.python_version()}"
    + (", **--quick (tiny models; not a measurement)**" if quick else ""),
    "",
    f"`python benchmarks/stage2_ab.py --rounds={rounds} --calls={calls}"
    + ("" if names[1:] == ["gp_stride=1"] else "".join(f" --variant={n}" for n in names[1:]))
    + (" --quick" if quick else "")
    + "`: critic estimator, batch "
    f"{c.batch_size}, n_critic {c.n_critic}, {c.steps_per_call} generator steps per "
    f"call, G {tuple(c.hidden)}, critic {tuple(c.critic_hidden)}; {rounds} rounds of "
    f"{calls} calls per variant, interleaved. Rates are generator steps per second. "
    f"1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end.",
    "",
  ]
  body = []
  for name in names:
    xs = rates[name]
    q1, med, q3 = _quartiles(xs)
    if name == names[0]:
      ratio, faster = "1", "—"
    else:
      ratios = [x / b for x, b in zip(xs, base, strict=True)]
      ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
      faster = f"{sum(r > 1 for r in ratios)} of {len(ratios)} rounds"
    body.append(
      [name, f"{med:.1f}", f"{q1:.1f}–{q3:.1f}", f"{min(xs):.1f}–{max(xs):.1f}", ratio, faster]
    )
  head = ["variant", "median", "IQR", "min–max", "ratio to first, median (min–max)", "faster in"]
  return "\n".join(lines) + "\n" + markdown_table(head, body, "lrrrrr")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny models, few rounds")
  parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
  parser.add_argument("--calls", type=int, default=None, help="timed calls per block")
  parser.add_argument(
    "--variant",
    action="append",
    default=None,
    help="FIELD=VALUE of config.stage2 to time against the default (repeatable); "
    "default: gp_stride=1",
  )
  parser.add_argument("--out", default=str(RESULTS), help="markdown file to write")
  args = parser.parse_args(argv)
  rounds = args.rounds or (2 if args.quick else 15)
  calls = args.calls or (1 if args.quick else 5)
  config = _config(args.quick)
  default = f"gp_stride={config.stage2.gp_stride} (default)"
  variants = [(default, [])]
  for v in args.variant or ["gp_stride=1"]:
    variants.append((v, [_parse(v)]))
  load_before = os.getloadavg()[0]
  rates = measure(variants, args.quick, rounds, calls)
  load = (load_before, os.getloadavg()[0])
  text = markdown(variants, rates, args.quick, rounds, calls, config, load)
  write_table(text, args.out)


if __name__ == "__main__":
  main()
