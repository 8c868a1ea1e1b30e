"""The per-machine cache of trained feature nets: Orbax parameter files and a file lock.

A feature net of a data set without a shipped net is trained once per machine and kept
under `cache_dir()/"classifier"/<key>` (see `classifier.load_or_train_classifier`). These
helpers restore it, write it atomically, and keep two processes from training it twice.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def _local_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer private to this process.

  The feature net is a per-process cache (in a multi-host run only process 0
  evaluates), so its reads and writes must not wait at Orbax's cross-process barriers.
  """
  me = jax.process_index()
  return ocp.StandardCheckpointer(
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"local{me}"
    )
  )


def restore_params(path: pathlib.Path, abstract: Any) -> Any:
  with _local_checkpointer() as ckptr:
    params = ckptr.restore(path.resolve(), abstract)
  shapes_ok = jax.tree.map(lambda a, b: a.shape == b.shape, params, abstract)
  finite = jax.tree.map(lambda a: bool(jnp.all(jnp.isfinite(a))), params)
  if not (all(jax.tree.leaves(shapes_ok)) and all(jax.tree.leaves(finite))):
    raise ValueError("restored parameters have the wrong shapes or non-finite values")
  return params


def save_params_atomically(path: pathlib.Path, params: Any) -> None:
  """Writes a private copy with Orbax, then renames it into place (or drops a corrupt one)."""
  staging = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    with _local_checkpointer() as ckptr:
      ckptr.save((staging / "params").resolve(), jax.device_get(params))
    if path.exists():  # A corrupt entry (we hold the lock, so no one else is writing it).
      shutil.rmtree(path, ignore_errors=True)
    try:
      os.rename(staging / "params", path)
    except OSError:
      if not path.exists():  # Not a lost race with a lock-less writer: a real failure.
        raise
  except OSError as e:
    warnings.warn(f"could not cache the feature net at {path} ({e})", RuntimeWarning, stacklevel=3)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def file_lock(lock_path: pathlib.Path, timeout: float = 900.0) -> Iterator[None]:
  """An exclusive advisory lock (fcntl); a no-op where file locks are unsupported."""
  try:
    import fcntl
  except ImportError:  # pragma: no cover - non-POSIX.
    yield
    return
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:
    yield
    return
  locked = False
  try:
    deadline = time.monotonic() + timeout
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          break  # A stuck holder: go on without the lock; the rename stays atomic.
        time.sleep(0.2)
      except OSError:
        break  # Filesystem without flock support.
    yield
  finally:
    if locked:
      fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
