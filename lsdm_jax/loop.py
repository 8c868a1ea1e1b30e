"""The training loop shared by the stages and the baselines: train state, optimiser,
resume, checkpoints, progress, NaN policy.

A step function advances the state by `steps_per_call` optimiser steps in one jitted
call (the last call of a run whose length is not a multiple of it is shorter). Training
state is checkpointed with Orbax every `save_every` steps and at the end; a rerun
restores the newest readable checkpoint and continues, and a finished stage
(`meta['done']`) is skipped.

Resume is exact because `TrainState.step` *is* the position of the PRNG stream and of
the data iterator: each step draws its randomness from `fold_in(base_key, step)`, with
`base_key` derived from `config.seed` only, and its batch from `batch_fn(step)` (stage 1:
`stage1.batch_indices`, seeded permutations laid end to end; stage 2 samples on device
from the step's key). Nothing else carries state from one step to the next, so
(params, opt_state, step) is the whole checkpoint.

Non-finite losses, gradients or updated parameters are never applied (`guarded_update`):
the step is counted instead, and at the next log or save step `run` stops with a
`NonFiniteError` naming the stage and the first such step, before any checkpoint of the
later steps is written; with `skip_nonfinite` those steps are skipped and training goes on.
Metrics reach the host only on log steps.

The baselines train through the same loop without a checkpoint manager
(`train_in_memory`): no resume, no files, the same progress lines and NaN policy.

Progress: every log step is a log line (step, loss terms, steps/s, ETA) and, on the main
process, one JSON line in `metrics.jsonl` beside the stage's checkpoint directory (the
workdir); a resumed run appends, so steps after the last checkpoint may appear twice (the
later line is the one that counts). The same scalars go to TensorBoard event files in
`<workdir>/tensorboard/`, tagged `<stage>/<name>` (see `summaries`). In an interactive
terminal a one-line progress bar on stderr is redrawn as the steps go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lsdm_jax import checkpoints, parallel, summaries
from lsdm_jax import config as config_lib
from lsdm_jax.errors import CheckpointError, ConfigError, NonFiniteError

SCHEDULES = ("constant", "cosine", "linear")


@flax.struct.dataclass
class TrainState:
  """Everything a stage needs to continue exactly.

  Attributes:
    step: optimiser steps taken.
    params: parameter tree (e.g. {'generator': ..., 'critic': ...}).
    opt_state: optax state tree, same keys.
    nonfinite: number of steps whose loss or gradients were not finite (not applied).
    first_nonfinite: the first such step, or -1.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  nonfinite: jax.Array
  first_nonfinite: jax.Array

  @classmethod
  def create(cls, params, opt_state) -> TrainState:
    return cls(
      jnp.zeros((), jnp.int32),
      params,
      opt_state,
      jnp.zeros((), jnp.int32),
      jnp.full((), -1, jnp.int32),
    )


def guarded_update(
  state: TrainState, finite: jax.Array, params, opt_state, *, conditional: bool = False
) -> TrainState:
  """Applies an update only when it is finite; otherwise counts and skips it.

  Args:
    state: the state before the step.
    finite: scalar bool, whether the step's loss and gradients are finite.
    params: the updated parameters (also checked here: a finite gradient times a huge
      learning rate can still overflow).
    opt_state: the updated optimiser state.
    conditional: choose between old and new state with a `lax.cond` instead of
      element-wise selects. The values are the same; XLA:CPU compiles a ResNet's step
      a little faster this way (about 15% for the tiny CIFAR-10 config), but fuses the
      update differently (last-bit differences), and on GPU a conditional waits for the
      host. `conditional_update` says when to use it.
  """
  finite = finite & all_finite(params)
  if conditional:
    params, opt_state = jax.lax.cond(
      finite,
      lambda new, _: new,
      lambda _, old: old,
      (params, opt_state),
      (state.params, state.opt_state),
    )
  else:
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
  return state.replace(
    step=state.step + 1,
    params=params,
    opt_state=opt_state,
    nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
    first_nonfinite=jnp.where(
      (state.first_nonfinite < 0) & ~finite, state.step, state.first_nonfinite
    ),
  )


CPU_WORKAROUNDS_ENV = "LSDM_JAX_CPU_WORKAROUNDS"


def cpu_workarounds() -> bool:
  """Whether the XLA:CPU workarounds apply: `conditional_update` and `stage2.unroll_scans`.

  They do on the CPU backend and nowhere else, unless the environment variable
  LSDM_JAX_CPU_WORKAROUNDS says otherwise: `0` switches them off, so a CPU compiles and
  runs the programs every GPU or TPU run does (the tests run both); `1` switches them on
  on any backend. It is read at each call, so a program traced after the variable changes
  follows it.

  Raises:
    ConfigError: the variable holds anything but `0`, `1` or nothing.
  """
  value = os.environ.get(CPU_WORKAROUNDS_ENV, "").strip()
  if value not in ("", "0", "1"):
    raise ConfigError(
      f"{CPU_WORKAROUNDS_ENV}={value!r} must be 0 (off), 1 (on) or unset (on the CPU only)"
    )
  return jax.default_backend() == "cpu" if value == "" else value == "1"


def conditional_update(convolutional: bool) -> bool:
  """`guarded_update`'s `conditional`: for convolutional networks where `cpu_workarounds`."""
  return convolutional and cpu_workarounds()


def learning_rate(
  section, peak: float | None = None, updates_per_step: int = 1
) -> float | optax.Schedule:
  """The learning rate of a trained config section, by optimiser update.

  `section.schedule`: 'constant' (after the warm-up), 'cosine' or 'linear' decay from the
  peak to `final_lr_scale` × peak at `steps`; all after `warmup_steps` (at most steps − 1)
  of linear warm-up from 0. A constant rate without warm-up is a plain float.

  Args:
    section: a config section with `learning_rate` (the peak), `schedule`, `warmup_steps`,
      `final_lr_scale` and `steps`.
    peak: overrides `section.learning_rate` (e.g. stage 2's `critic_learning_rate`).
    updates_per_step: optimiser updates per step of the section (a critic's n_critic per
      generator update): the schedule follows the section's steps, as WGAN-GP decays its
      critic's rate with the generator's iteration.
  """
  peak = section.learning_rate if peak is None else peak
  if section.schedule == "constant" and not section.warmup_steps:
    return peak  # Needs no run length: `paired_data.without_length` sections have none.
  steps = max(int(section.steps), 1) * updates_per_step
  warmup = min(int(section.warmup_steps) * updates_per_step, steps - 1)
  final = peak * section.final_lr_scale
  if section.schedule == "constant":
    return optax.linear_schedule(0.0, peak, warmup) if warmup else peak
  if section.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, final)
  if section.schedule == "linear":
    decay = optax.linear_schedule(peak, final, steps - warmup)
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])
  raise ConfigError(f"schedule={section.schedule!r} is not one of {SCHEDULES}")


def make_optimizer(
  section, peak: float | None = None, updates_per_step: int = 1
) -> optax.GradientTransformation:
  """Adam (AdamW with `weight_decay` > 0) after clipping the gradients' global norm at
  `grad_clip` (0: no clipping), at the rate `learning_rate(section, peak,
  updates_per_step)`: the one optimiser of every stage and baseline, built from its config
  section."""
  lr = learning_rate(section, peak, updates_per_step)
  if section.weight_decay > 0:
    adam = optax.adamw(lr, b1=section.b1, b2=section.b2, weight_decay=section.weight_decay)
  else:
    adam = optax.adam(lr, b1=section.b1, b2=section.b2)
  if not section.grad_clip:
    return adam
  return optax.chain(optax.clip_by_global_norm(section.grad_clip), adam)


def check_optimizer(section, name: str) -> None:
  """Raises ConfigError if section `name`'s schedule is not one of `SCHEDULES`."""
  config_lib.check_choice(section.schedule, SCHEDULES, f"{name}.schedule")


def apply_gradients(tx: optax.GradientTransformation, grads, opt_state, params):
  """(new params, new optimiser state) after one update of `tx` with `grads`."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def ema_update(ema, params, decay: float, step: jax.Array):
  """Exponential moving average of a weight tree after optimiser step `step` (0-based).

  The decay is warmed up as min(decay, (1 + k) / (10 + k)), so the average forgets the
  random initial weights within the first steps rather than after ~1 / (1 − decay).
  """
  k = jnp.asarray(step, jnp.float32)
  d = jnp.minimum(decay, (1.0 + k) / (10.0 + k))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def all_finite(*trees) -> jax.Array:
  """Scalar bool: whether every element of every leaf of `trees` is finite."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  flags = jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).astype(jnp.int32)
  # A min over the flags as numbers, not `jnp.all`: XLA rewrites the latter into a chain of
  # scalar ands and copies that chain into each consumer, such as every leaf's select in
  # `guarded_update` (quadratic in the leaves: a ResNet's step compiled 6x slower on CPU).
  return jnp.min(flags) == 1


@dataclasses.dataclass
class LoopConfig:
  """How a stage loops. All counts are in optimiser steps."""

  name: str
  num_steps: int
  steps_per_call: int = 1
  log_every: int = 100
  save_every: int = 1000
  keep: int = 2
  skip_nonfinite: bool = False

  @classmethod
  def from_config(cls, name: str, cfg) -> LoopConfig:
    """The loop settings of a stage's config section (`config.stage1`, `config.stage2`)."""
    return cls(
      name=name,
      num_steps=cfg.steps,
      steps_per_call=cfg.get("steps_per_call", 1),
      log_every=cfg.log_every,
      save_every=cfg.save_every,
      keep=cfg.keep,
      skip_nonfinite=cfg.skip_nonfinite,
    )

  def validate(self, prefix: str) -> None:
    """Raises ConfigError naming the field if a count is not usable."""
    counts = ("steps_per_call", "keep", "num_steps", "log_every", "save_every")
    for field in counts:
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        name = "steps" if field == "num_steps" else field
        raise ConfigError(f"{prefix}.{name}={value!r} must be a positive integer")
    k = self.steps_per_call
    for field in ("num_steps", "log_every", "save_every"):
      value = getattr(self, field)
      if value % k:
        name = "steps" if field == "num_steps" else field
        raise ConfigError(
          f"{prefix}.{name}={value} must be a multiple of {prefix}.steps_per_call={k}"
        )


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def run(
  loop: LoopConfig,
  state: TrainState,
  step_fn: Callable[[TrainState, Any], tuple[TrainState, dict]],
  batch_fn: Callable[[int], Any],
  manager=None,
  meta: dict | None = None,
  *,
  on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
  """Trains `state` to `loop.num_steps`, resuming from `manager` if it has a checkpoint.

  Args:
    loop: counts and policies.
    state: a freshly initialised (sharded) state; its structure is the restore target.
    step_fn: jitted (state, batch) → (state, metrics) advancing `steps_per_call` steps.
    batch_fn: step → the second argument of `step_fn` for the call that starts at
      `step` (a batch; None if the step samples its own data on device).
    manager: from `checkpoints.make_manager`; None trains in memory (no resume, no
      checkpoints, no metrics.jsonl or TensorBoard events).
    meta: JSON-able facts saved beside each checkpoint (the stage's config...).
    on_log: called on the main process with (step, metrics) at each log step.

  Returns:
    The trained state and the logged metrics history.

  Raises:
    NonFiniteError: a step had a non-finite loss or gradient (unless skip_nonfinite).
  """
  history: list[dict[str, float]] = []
  meta = {} if meta is None else meta
  _SKIP_WARNED.pop(loop.name, None)
  restored = None
  if manager is not None:
    restored = checkpoints.restore_latest(
      manager, checkpoints.abstract_like(state), what=loop.name, set_aside_unreadable=True
    )
  if restored is not None:
    state, saved_meta, step = restored
    _check_same_config(loop.name, manager.directory, saved_meta.get("config"), meta.get("config"))
    history = list(saved_meta.get("history", []))
    if saved_meta.get("done"):
      logging.info("%s: finished at step %d in an earlier run; skipping", loop.name, step)
      return state, history
    logging.info("%s: resuming from step %d", loop.name, step)
  start = int(state.step)
  t0, s0 = time.perf_counter(), start
  step = start
  bar = ProgressBar(loop.name, loop.num_steps) if parallel.is_main_process() else None
  # The scalars of metrics.jsonl again, for TensorBoard (written out also on an error).
  events = contextlib.nullcontext()
  if manager is not None:
    events = summaries.SummaryWriter(pathlib.Path(manager.directory).parent / "tensorboard")
  with events:
    while step < loop.num_steps:
      state, metrics = step_fn(state, batch_fn(step))
      parallel.dispatch_barrier(state.step)
      step = min(step + loop.steps_per_call, loop.num_steps)
      if bar is not None:
        bar.update(step, (step - s0) / max(time.perf_counter() - t0, 1e-9))
      is_last = step >= loop.num_steps
      if step % loop.log_every == 0 or is_last or step % loop.save_every == 0:
        _check_finite(loop, state, is_last, resumable=manager is not None)
      if step % loop.log_every == 0 or is_last:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - t0
        rate = (step - s0) / max(elapsed, 1e-9)
        metrics.update(step=step, steps_per_sec=rate)
        history.append(metrics)
        if parallel.is_main_process():
          terms = " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("step", "steps_per_sec")
          )
          eta = (loop.num_steps - step) / max(rate, 1e-9)
          bar.clear()
          if manager is not None:
            _append_jsonl(manager, loop.name, metrics)
            events.write_scalars(
              step, {f"{loop.name}/{k}": v for k, v in metrics.items() if k != "step"}
            )
          logging.info(
            "%s step %d/%d (%.0f%%) %s | %.1f steps/s, ETA %s",
            loop.name,
            step,
            loop.num_steps,
            100.0 * step / loop.num_steps,
            terms,
            rate,
            format_duration(eta),
          )
          if on_log is not None:
            on_log(step, metrics)
      if manager is not None and (step % loop.save_every == 0 or is_last):
        checkpoints.save(
          manager,
          step,
          state,
          {**meta, "done": is_last, "history": history},
          force=is_last,
          what=loop.name,
        )
  if bar is not None:
    bar.clear()
  return state, history


def train_in_memory(
  name: str,
  state: TrainState,
  call: Callable[[TrainState, int], tuple[TrainState, dict]],
  *,
  steps: int,
  steps_per_call: int,
) -> tuple[TrainState, dict[str, np.ndarray]]:
  """`run` without checkpoints, one log step per call: how the baselines train.

  Args:
    name: the model's name in log lines and errors (its config section).
    state: the initial state.
    call: (state, n) → (state, metrics) running n optimiser steps in one jitted call,
      n = min(steps_per_call, steps left); metrics are scalars (e.g. means over the call).
    steps, steps_per_call: run length and steps per call.

  Returns:
    The trained state and its history: per call `step` (steps done), the metrics and
    `steps_per_sec`, each an array.

  Raises:
    NonFiniteError: a step had a non-finite loss, gradient or update.
  """
  cfg = LoopConfig(name, steps, steps_per_call, log_every=steps_per_call, save_every=steps)
  state, history = run(cfg, state, call, lambda step: min(steps_per_call, steps - step))
  return state, {k: np.asarray([h[k] for h in history]) for k in history[0]}


class ProgressBar:
  """A one-line `\\r` progress bar on stderr, drawn only when stderr is a terminal."""

  def __init__(self, name: str, total: int, width: int = 30, stream=None):
    self.name, self.total, self.width = name, total, width
    self.stream = sys.stderr if stream is None else stream
    self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
    self._last = 0.0
    self._drawn = False

  def update(self, step: int, rate: float) -> None:
    """Redraws (at most 10 times a second, and at the end)."""
    now = time.monotonic()
    if not self.enabled or (now - self._last < 0.1 and step < self.total):
      return
    self._last = now
    done = int(self.width * step / self.total)
    eta = format_duration((self.total - step) / max(rate, 1e-9))
    self.stream.write(
      f"\r{self.name} [{'#' * done}{'.' * (self.width - done)}] {step}/{self.total} "
      f"{rate:.1f} steps/s ETA {eta}\x1b[K"
    )
    self.stream.flush()
    self._drawn = True

  def clear(self) -> None:
    """Erases the bar (before a log line, and at the end)."""
    if self._drawn:
      self.stream.write("\r\x1b[K")
      self.stream.flush()
      self._drawn = False


def _append_jsonl(manager, name: str, metrics: dict[str, float]) -> None:
  """One JSON line per log step in `<workdir>/metrics.jsonl` (the stage directory's parent)."""
  path = pathlib.Path(manager.directory).parent / "metrics.jsonl"
  line = json.dumps({"stage": name, "time": time.time(), **metrics}, allow_nan=True)
  with open(path, "a") as f:
    f.write(line + "\n")


def _check_same_config(name: str, directory, saved: str | None, current: str | None) -> None:
  """Refuses to resume checkpoints that another config of the stage wrote."""
  if saved is None or current is None:
    return
  old = config_lib.result_fields(json.loads(saved))
  new = config_lib.result_fields(json.loads(current))
  if old != new:
    diff = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    raise CheckpointError(
      f"{name} checkpoints in {directory} were written with {name}.{diff}={old.get(diff)!r}, "
      f"not {new.get(diff)!r}; use another --workdir, or --overwrite to retrain"
    )


_SKIP_WARNED: dict[str, tuple[float, int]] = {}  # Stage → (time, count) of its last warning.


def _check_finite(loop: LoopConfig, state: TrainState, is_last: bool, resumable: bool) -> None:
  """Stops on the first non-finite step (its update was not applied), or warns if skipped
  (when the count grew, at most once a minute per stage, and at the end)."""
  bad, first = (int(v) for v in jax.device_get((state.nonfinite, state.first_nonfinite)))
  if bad and not resumable:
    raise NonFiniteError(
      f"{loop.name}: non-finite loss, gradient or update in step {first + 1} of "
      f"{loop.num_steps}; lower {loop.name}.learning_rate"
    )
  if bad and not loop.skip_nonfinite:
    raise NonFiniteError(
      f"{loop.name}: non-finite loss, gradient or update in step {first + 1} of "
      f"{loop.num_steps}; the checkpoints before it are kept. Rerun the same command "
      f"with --config.{loop.name}.skip_nonfinite=True to resume skipping such steps, or "
      f"lower {loop.name}.learning_rate in a new run"
    )
  last_time, last_bad = _SKIP_WARNED.get(loop.name, (-float("inf"), 0))
  now = time.monotonic()
  if bad > last_bad and (is_last or now - last_time >= 60):
    logging.warning(
      "%s: skipped %d non-finite step(s) of %d so far (the first: step %d)",
      loop.name,
      bad,
      int(state.step),
      first + 1,
    )
    _SKIP_WARNED[loop.name] = (now, bad)
