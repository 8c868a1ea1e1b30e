"""Tests of lsdm_jax.checkpoints: damaged checkpoints, unfinished saves, full disks."""

import asyncio
import logging
import pathlib
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from lsdm_jax import checkpoints
from lsdm_jax.errors import CheckpointError

STATE = {"a": jnp.arange(6.0), "b": {"c": jnp.ones((2, 3), jnp.int32)}}


def _saved(directory, steps=(2, 4)):
  manager = checkpoints.make_manager(directory, save_every=2, keep=5)
  for step in steps:
    state = {"a": STATE["a"] * step, "b": STATE["b"]}
    checkpoints.save(manager, step, state, {"done": step == steps[-1]})
  manager.close()
  return directory


def _restore(directory, **kw):
  manager = checkpoints.make_manager(directory, save_every=2, keep=5)
  try:
    return checkpoints.restore_latest(
      manager, checkpoints.abstract_like(STATE), what="stage9", **kw
    )
  finally:
    manager.close()


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path):
  path.write_bytes(b"\0" * path.stat().st_size)


DAMAGE = {
  "truncate every state file": lambda d: [_truncate(f) for f in _files(d / "state")],
  "zero every state file": lambda d: [_zero(f) for f in _files(d / "state")],
  "zero the ocdbt manifest": lambda d: _zero(d / "state" / "manifest.ocdbt"),
  "truncate the array data": lambda d: [_truncate(f) for f in (d / "state" / "d").iterdir()],
  "delete the array data": lambda d: shutil.rmtree(d / "state" / "d"),
  "truncate the meta item": lambda d: _truncate(d / "meta" / "metadata"),
  "meta not a JSON object": lambda d: (d / "meta" / "metadata").write_text("[1, 2]"),
  "delete the state item": lambda d: shutil.rmtree(d / "state"),
}


def _files(directory):
  return [f for f in directory.rglob("*") if f.is_file()]


def _tasks_left_running_at_close(monkeypatch):
  """The unfinished tasks of every event loop closed from now on (a list that fills up)."""
  left, close = [], asyncio.BaseEventLoop.close

  def recording_close(loop):
    left.extend(t.get_coro().__qualname__ for t in asyncio.all_tasks(loop) if not t.done())
    close(loop)

  monkeypatch.setattr(asyncio.BaseEventLoop, "close", recording_close)
  return left


def test_round_trip(tmp_path):
  state, meta, step = _restore(_saved(tmp_path))
  assert step == 4 and meta == {"done": True}
  np.testing.assert_array_equal(state["a"], np.arange(6.0) * 4)
  assert state["b"]["c"].dtype == jnp.int32


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_reported_in_one_line_and_the_previous_used(
  tmp_path, caplog, damage, monkeypatch
):
  _saved(tmp_path)
  DAMAGE[damage](tmp_path / "4")
  left_running = _tasks_left_running_at_close(monkeypatch)
  with caplog.at_level(logging.WARNING):
    state, meta, step = _restore(tmp_path)
  # A read of the damaged checkpoint still running when its event loop closed would finish
  # into the closed loop later and fail whichever test runs then.
  assert not left_running, left_running
  assert step == 2 and meta == {"done": False}
  np.testing.assert_array_equal(state["a"], np.arange(6.0) * 2)
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith("stage9 checkpoint at step 4 in ") and "\n" not in warnings[0]
  assert (tmp_path / "4").exists()  # Only a training run moves it aside.


def test_training_sets_the_unreadable_checkpoint_aside_and_can_save_its_step_again(tmp_path):
  directory = tmp_path / "stage9"
  _saved(directory)
  DAMAGE["truncate every state file"](directory / "4")
  assert _restore(directory, set_aside_unreadable=True)[2] == 2
  aside = list((tmp_path / "stage9.unreadable").iterdir())
  assert [p.name.split("-")[0] for p in aside] == ["4"] and (aside[0] / "state").is_dir()
  _saved(directory, steps=(4,))
  assert _restore(directory)[2] == 4


def test_no_readable_checkpoint_is_an_error_that_says_what_to_do(tmp_path):
  _saved(tmp_path)
  for step in ("2", "4"):
    DAMAGE["zero every state file"](tmp_path / step)
  with pytest.raises(
    CheckpointError, match=r"no readable stage9 checkpoint .*tried steps \[4, 2\]"
  ):
    _restore(tmp_path, set_aside_unreadable=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"]  # Nothing moved.


def test_no_checkpoint_at_all_is_none(tmp_path):
  assert _restore(tmp_path) is None


def test_an_unfinished_save_is_ignored_and_cleaned_up(tmp_path):
  _saved(tmp_path, steps=(2,))
  # What a save killed half way leaves behind.
  shutil.copytree(tmp_path / "2", tmp_path / "4.orbax-checkpoint-tmp-1700000000")
  assert _restore(tmp_path)[2] == 2
  assert not list(tmp_path.glob("*tmp*"))  # Removed when the manager opened the directory.
  _saved(tmp_path, steps=(4,))
  assert _restore(tmp_path)[2] == 4


def test_a_full_disk_while_saving_is_a_checkpoint_error(tmp_path, monkeypatch):
  manager = checkpoints.make_manager(tmp_path, save_every=2, keep=2)

  def full(*args, **kwargs):
    # How TensorStore reports ENOSPC.
    raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file "x": Failed '
      "to write 189677 bytes to file 7: No space left on device [os_error_code='28']"
    )

  monkeypatch.setattr(manager, "save", full)
  with pytest.raises(CheckpointError, match=r"stage9 checkpoint of step 2 .*No space left"):
    checkpoints.save(manager, 2, STATE, {}, what="stage9")
  monkeypatch.undo()
  manager.close()


def test_other_save_errors_propagate(tmp_path, monkeypatch):
  manager = checkpoints.make_manager(tmp_path, save_every=2, keep=2)
  monkeypatch.setattr(manager, "save", lambda *a, **k: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    checkpoints.save(manager, 2, STATE, {})
  monkeypatch.undo()
  manager.close()


def test_no_module_unpickles_or_evaluates_what_it_reads():
  """Data, checkpoints and latents are read as arrays and JSON only (npz with
  allow_pickle=False; Orbax with TensorStore and JSON). Config files are Python by design."""
  root = pathlib.Path(__file__).resolve().parents[1]
  risky = re.compile(
    r"\bpickle\.|cloudpickle|\bdill\b|joblib|torch\.load|yaml\.(unsafe_)?load|marshal\.loads|"
    r"shelve\.|\beval\(|\bexec\(|allow_pickle=True|np\.load\((?![^)]*allow_pickle=False)"
  )
  hits = [
    f"{path.relative_to(root)}:{i}: {line.strip()}"
    for folder in ("lsdm_jax", "experiments")
    for path in sorted((root / folder).rglob("*.py"))
    for i, line in enumerate(path.read_text().splitlines(), 1)
    if risky.search(line)
  ]
  assert not hits, hits


class _Manager:
  """A manager whose restore fails for `unreadable` steps (one process's view)."""

  directory = "ckpt"

  def __init__(self, steps, unreadable):
    self.steps, self.unreadable, self.restored = steps, set(unreadable), []

  def all_steps(self):
    return list(self.steps)

  def restore(self, step, args):
    self.restored.append(step)
    if step in self.unreadable:
      raise ValueError(f"step {step} is damaged here")
    return {"state": {"step": step}, "meta": {}}


def _as_processes(monkeypatch, views):
  """Runs restore_latest for each view in its own thread, as that many processes would,
  with min_max_over_processes gathering over the threads."""
  import threading

  barrier, values, out = threading.Barrier(len(views)), {}, {}

  def gather(i):
    def min_max(value):
      values[i] = value
      barrier.wait()
      both = min(values.values()), max(values.values())
      barrier.wait()  # Everyone has read this round before anyone writes the next.
      return both

    return min_max

  local = threading.local()
  monkeypatch.setattr(checkpoints, "min_max_over_processes", lambda v: local.gather(v))

  def work(i, manager):
    local.gather = gather(i)
    try:
      out[i] = checkpoints.restore_latest(manager, None, what="stage9")
    except CheckpointError as e:
      out[i] = e

  threads = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate(views)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  return out


def test_processes_agree_on_the_newest_step_that_every_one_can_read(monkeypatch):
  views = [_Manager([2, 4, 6, 8], []), _Manager([2, 4, 6, 8], [8]), _Manager([2, 4, 6, 8], [6])]
  out = _as_processes(monkeypatch, views)
  assert [out[i][2] for i in range(3)] == [4, 4, 4]
  # Round by round: (8, -, 8) agree on 6, which the third cannot read, then on 4.
  assert [v.restored for v in views] == [[8, 6, 4], [8, 6, 4], [8, 6, 4]]


def test_processes_fail_together_when_one_can_read_nothing(monkeypatch):
  views = [_Manager([2, 4], []), _Manager([2, 4], [2, 4])]
  out = _as_processes(monkeypatch, views)
  assert all(isinstance(out[i], CheckpointError) for i in range(2))


def test_processes_start_fresh_together_only_when_none_has_a_checkpoint(monkeypatch):
  assert _as_processes(monkeypatch, [_Manager([], []), _Manager([], [])]) == {0: None, 1: None}
  out = _as_processes(monkeypatch, [_Manager([], []), _Manager([2], [])])
  assert all(isinstance(out[i], CheckpointError) for i in range(2))
