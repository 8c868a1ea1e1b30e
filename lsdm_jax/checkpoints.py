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

import asyncio
import contextlib
import os
import pathlib
import re
import shutil
import threading
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


class _DrainingLoops(asyncio.AbstractEventLoopPolicy):
  """The policy it wraps, except that loops made in `threads` end like `asyncio.run`'s.

  Orbax runs each read on a new event loop (`asyncio_utils.run_sync`) that it closes as soon
  as the first read fails, leaving the others pending: a TensorStore read then finishes in
  its own thread into the closed loop (`RuntimeError: Event loop is closed`, reported at
  random later as an unraisable exception), and a pending task or file read in a worker
  thread is destroyed unfinished. Before such a loop closes, this cancels its pending tasks
  and runs them to their end (a cancelled TensorStore read is cancelled in TensorStore too)
  and waits for its worker threads, as `asyncio.run` does.
  """

  def __init__(self, inner: asyncio.AbstractEventLoopPolicy):
    self.inner, self.threads = inner, set()

  def get_event_loop(self):
    return self.inner.get_event_loop()

  def set_event_loop(self, loop):
    self.inner.set_event_loop(loop)

  def get_child_watcher(self):
    return self.inner.get_child_watcher()

  def set_child_watcher(self, watcher):
    self.inner.set_child_watcher(watcher)

  def new_event_loop(self):
    loop = self.inner.new_event_loop()
    if threading.get_ident() in self.threads:
      close = loop.close

      def drain_and_close():
        try:
          if not loop.is_closed() and not loop.is_running():
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
              task.cancel()
            if pending:
              loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
          close()

      loop.close = drain_and_close
    return loop


_draining_lock = threading.Lock()


@contextlib.contextmanager
def _reads_end_with_their_loop():
  """Orbax's event loops made in this thread meanwhile leave no read running when they close.

  The policy is installed while any thread is inside (restores may run in threads at once)
  and the previous one is back when the last one leaves.
  """
  with _draining_lock:
    policy = asyncio.get_event_loop_policy()
    if not isinstance(policy, _DrainingLoops):
      policy = _DrainingLoops(policy)
      asyncio.set_event_loop_policy(policy)
    policy.threads.add(threading.get_ident())
  try:
    yield
  finally:
    with _draining_lock:
      policy.threads.discard(threading.get_ident())
      if not policy.threads and asyncio.get_event_loop_policy() is policy:
        asyncio.set_event_loop_policy(policy.inner)


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
    with _reads_end_with_their_loop():
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
