"""Orbax checkpoint managers for the stages, with validated, newest-first restore.

A checkpoint holds the train state (params, optimizer state, step) and a JSON `meta`
item (the stage's config fingerprint and whether the stage finished). The data order
and all randomness are functions of (seed, step), so the step alone restores the data
iterator and the PRNG stream exactly.

`latest_step()` does not validate a step: a truncated or damaged checkpoint only fails
at restore. `restore_latest` therefore tries steps newest first, warns in one line for
each one it cannot read, and falls back to the previous one.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp
from absl import logging

from lsdm_jax.errors import CheckpointError


def make_manager(
  directory: str | pathlib.Path, *, save_every: int, keep: int, read_only: bool = False
):
  """A manager that saves every `save_every` steps (and when forced) and keeps `keep`."""
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
    save_decision_policy=policies.FixedIntervalPolicy(save_every),
    preservation_policy=policies.LatestN(keep),
    enable_async_checkpointing=False,
    read_only=read_only,
    create=not read_only,
  )
  return ocp.CheckpointManager(
    pathlib.Path(directory).absolute(),
    item_names=("state", "meta"),
    options=options,
  )


def save(manager, step: int, state, meta: dict, *, force: bool = False) -> bool:
  """Saves (state, meta) at `step` if the policy (or `force`) says so."""
  saved = manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=force,
  )
  manager.wait_until_finished()
  return saved


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a live state, as the restore target."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
    tree,
  )


def restore_latest(manager, abstract_state, *, what: str):
  """Restores the newest readable checkpoint.

  Args:
    manager: from `make_manager`.
    abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) to restore into.
    what: the stage's name, for messages.

  Returns:
    (state, meta, step), or None when there is no checkpoint at all.

  Raises:
    CheckpointError: when checkpoints exist but none can be read.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  for step in steps:
    try:
      restored = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
      )
      return restored["state"], dict(restored["meta"]), step
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
  raise CheckpointError(
    f"no readable {what} checkpoint in {manager.directory} (tried steps {steps}); "
    "delete that directory to retrain the stage"
  )
