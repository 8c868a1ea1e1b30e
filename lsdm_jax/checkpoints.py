"""Orbax checkpoint managers for the stages, with validated, newest-first restore.

A checkpoint holds the train state (params, optimizer state, step) and a JSON `meta`
item (the stage's config fingerprint and whether the stage finished). The data order
and all randomness are functions of (seed, step), so the step alone restores the data
iterator and the PRNG stream exactly (see `lsdm_jax.loop`).

`latest_step()` does not validate a step: a truncated or damaged checkpoint only fails
at restore. `restore_latest` therefore tries steps newest first, warns in one line for
each one it cannot read, and falls back to the previous one; a training run moves the
unreadable ones aside (to `<dir>.unreadable/`) so that their steps can be saved again.
With many processes, all of them agree on the step they restore: the newest one that every
process could read (a process never falls back alone).
A save killed half way leaves only an `*.orbax-checkpoint-tmp*` directory, which is never
restored and is removed when the next training run opens the directory.

Nothing here unpickles: Orbax stores arrays with TensorStore and `meta` as JSON.
"""

from __future__ import annotations

import gc
import logging as logging_std
import os
import pathlib
import re
import shutil
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from lsdm_jax.errors import CheckpointError

UNREADABLE_SUFFIX = ".unreadable"
TMP_MARK = ".orbax-checkpoint-tmp"  # In the name of a save that has not finished.


def make_manager(
  directory: str | pathlib.Path, *, save_every: int, keep: int, read_only: bool = False
):
  """A manager that saves every `save_every` steps (and when forced) and keeps `keep`.

  Unless `read_only`, first removes what saves cut short left behind. (Orbax's own
  `cleanup_tmp_directories` runs in the background and may still be running when a
  manager is closed without saving, e.g. after a finished stage was skipped.)
  """
  directory = pathlib.Path(directory).absolute()
  if not read_only and directory.is_dir() and jax.process_index() == 0:
    for tmp in directory.glob(f"*{TMP_MARK}*"):
      shutil.rmtree(tmp, ignore_errors=True)
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
    save_decision_policy=policies.FixedIntervalPolicy(save_every),
    preservation_policy=policies.LatestN(keep),
    enable_async_checkpointing=False,
    read_only=read_only,
    create=not read_only,
  )
  return ocp.CheckpointManager(
    directory,
    item_names=("state", "meta"),
    options=options,
  )


def save(manager, step: int, state, meta: dict, *, force: bool = False, what: str = "") -> bool:
  """Saves (state, meta) at `step` if the policy (or `force`) says so.

  Raises:
    CheckpointError: the directory cannot be written (full disk, permissions).
  """
  try:
    saved = manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=force,
    )
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001 - TensorStore reports I/O errors as ValueError.
    code = io_error_code(e)
    if code is None:
      raise
    raise CheckpointError(
      f"cannot write the {what or 'training'} checkpoint of step {step} to "
      f"{manager.directory} ({os.strerror(code)}); free space or fix permissions, then "
      "rerun the same command to resume from the last checkpoint"
    ) from e
  return saved


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def io_error_code(e: BaseException | None) -> int | None:
  """The errno of an operating-system error in `e`'s chain, raised as OSError or reported
  in TensorStore's text (`[os_error_code='28']`), or None."""
  while e is not None:
    if isinstance(e, OSError) and e.errno is not None:
      return e.errno
    match = _OS_ERROR_CODE.search(str(e))
    if match:
      return int(match.group(1))
    e = e.__cause__ or e.__context__
  return None


class _DropAbandonedReads(logging_std.Filter):
  def filter(self, record: logging_std.LogRecord) -> bool:
    text = record.getMessage()
    return not ("exception was never retrieved" in text and "tensorstore" in text.lower())


def _is_abandoned_read(unraisable) -> bool:
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
    return True  # An Orbax read coroutine that never ran to its end.
  exc, tb = unraisable.exc_value, unraisable.exc_traceback
  frames = []
  while tb is not None:
    frames.append(tb.tb_frame.f_code.co_name)
    tb = tb.tb_next
  # TensorStore finishing an abandoned read after Orbax closed its event loop.
  return isinstance(exc, RuntimeError) and "call_soon_threadsafe" in frames


def _collect_abandoned_reads() -> None:
  """Collects the reads a failed restore abandoned, without their duplicate reports.

  A failed restore leaves Orbax's other reads of that checkpoint unfinished. Collected,
  each one's error would be printed with a traceback ("Exception ignored in ...",
  "Future exception was never retrieved"), repeating the failure that `restore_latest`
  reports in one line. The unraisable-exception hook drops exactly these reports while
  they are collected here and is restored afterwards. An abandoned asyncio task may finish
  and be collected later, so the asyncio logger keeps a filter that drops only the
  reports of abandoned TensorStore reads.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  asyncio_logger = logging_std.getLogger("asyncio")
  if not any(isinstance(f, _DropAbandonedReads) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropAbandonedReads())
  sys.unraisablehook = hook
  try:
    gc.collect()
  finally:
    sys.unraisablehook = previous


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a live state, as the restore target."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
    tree,
  )


def restore_latest(manager, abstract_state, *, what: str, set_aside_unreadable: bool = False):
  """Restores the newest checkpoint that every process can read.

  Each process tries steps newest first; then the processes agree on the oldest of their
  newest readable steps (`min_max_over_processes`), and a process that read a newer one
  restores the agreed step instead, so all of them continue from the same state. With
  one process this is a plain newest-first fallback.

  Args:
    manager: from `make_manager`.
    abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) to restore into.
    what: the stage's name, for messages.
    set_aside_unreadable: move the checkpoints newer than the restored one (unreadable on
      some process) to `<dir>.unreadable/` (training does, so that it can save those steps
      again).

  Returns:
    (state, meta, step), or None when there is no checkpoint at all.

  Raises:
    CheckpointError: when checkpoints exist but none can be read on every process.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if min_max_over_processes(len(steps))[1] == 0:
    return None
  bound, found, unreadable = None, None, set()
  while True:
    if found is None or (bound is not None and found[2] > bound):
      found = None
      for step in steps:
        if step in unreadable or (bound is not None and step > bound):
          continue
        found = _try_restore(manager, abstract_state, step, what)
        if found is not None:
          break
        unreadable.add(step)
    low, high = min_max_over_processes(-1 if found is None else found[2])
    if low == high:
      break
    bound = low
  if found is None:
    raise CheckpointError(
      f"no readable {what} checkpoint in {manager.directory} (tried steps {steps}); "
      "delete that directory to retrain the stage"
    )
  newer = [s for s in steps if s > found[2]]
  if newer and set_aside_unreadable:
    _set_aside(manager, newer)
  return found


def min_max_over_processes(value: int) -> tuple[int, int]:
  """(min, max) of an int over all processes (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return value, value
  from jax.experimental import multihost_utils

  values = np.asarray(multihost_utils.process_allgather(np.asarray([value], np.int64)))
  return int(values.min()), int(values.max())


def _try_restore(manager, abstract_state, step: int, what: str):
  """(state, meta, step) of one step, or None (with a one-line warning) if unreadable."""
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    meta = restored["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"meta is a {type(meta).__name__}, not a JSON object")
  except Exception as e:  # noqa: BLE001 - Orbax raises ValueError, KeyError, JSON errors...
    _collect_abandoned_reads()
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    logging.warning(
      "%s checkpoint at step %d in %s is unreadable (%s: %s); trying an earlier one",
      what,
      step,
      manager.directory,
      type(e).__name__,
      first,
    )
    return None
  return restored["state"], dict(meta), step


def _set_aside(manager, steps: list[int]) -> None:
  """Moves unreadable step directories out of the manager's way (never deletes them)."""
  directory = pathlib.Path(manager.directory)
  aside = directory.with_name(directory.name + UNREADABLE_SUFFIX)
  if jax.process_index() == 0:
    aside.mkdir(exist_ok=True)
    for step in steps:
      source = directory / str(step)
      if source.exists():
        target = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(source, target)
        logging.info("moved the unreadable checkpoint %s to %s", source, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"lsdm_set_aside_{directory}")
  manager.reload()
