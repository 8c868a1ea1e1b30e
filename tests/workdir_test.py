"""Tests of lsdm_jax.workdir: one config per workdir, nothing overwritten by mistake."""

import errno
import hashlib
import json
import logging
import os
import re

import pytest

from lsdm_jax import config as config_lib
from lsdm_jax import workdir
from lsdm_jax.errors import WorkdirError


def tree_hash(root) -> str:
  """A hash of every path, file content and mode under `root` (or of its absence)."""
  h = hashlib.sha256()
  if not os.path.lexists(root):
    return "absent"
  for dirpath, dirnames, filenames in sorted(os.walk(root)):
    dirnames.sort()
    for name in sorted(filenames) + [""]:
      path = os.path.join(dirpath, name)
      h.update(path.encode() + oct(os.lstat(path).st_mode).encode())
      if name:
        with open(path, "rb") as f:
          h.update(f.read())
  return h.hexdigest()


def _run(root, config=None):
  """A workdir holding a (fake) finished run of `config`."""
  config = config or config_lib.base_config()
  workdir.prepare(root, config)
  for name in ("stage1/10", "stage2/10", "latents", "samples"):
    (root / name).mkdir(parents=True)
    (root / name / "data").write_text(name)
  (root / "metrics.json").write_text("{}")
  return config


def test_a_new_workdir_gets_the_resolved_config(tmp_path):
  config = config_lib.base_config()
  path = workdir.prepare(tmp_path / "a" / "b", config)
  assert json.loads((path / "config.json").read_text()) == json.loads(config_lib.to_json(config))
  assert workdir.load_config(path) == config
  assert sorted(p.name for p in path.iterdir()) == ["config.json"]  # The write test is gone.


def test_the_same_config_again_changes_nothing(tmp_path):
  config = _run(tmp_path)
  before = tree_hash(tmp_path)
  workdir.prepare(tmp_path, config)
  assert tree_hash(tmp_path) == before


def test_a_rerun_removes_unfinished_saves(tmp_path):
  config = _run(tmp_path)
  (tmp_path / "latents.orbax-checkpoint-tmp-1700000000" / "arrays").mkdir(parents=True)
  workdir.prepare(tmp_path, config)
  assert not list(tmp_path.glob("*tmp*")) and (tmp_path / "latents" / "data").exists()


def test_another_config_is_refused_and_nothing_is_touched(tmp_path):
  config = _run(tmp_path)
  before = tree_hash(tmp_path)
  there = config.stage2.learning_rate
  config.stage2.learning_rate = 1e-3
  diff = rf"\(stage2.learning_rate: {re.escape(repr(there))} there, 0.001 now\); pass --overwrite"
  with pytest.raises(WorkdirError, match=diff):
    workdir.prepare(tmp_path, config)
  assert tree_hash(tmp_path) == before


def test_overwrite_replaces_the_results_of_another_config(tmp_path):
  config = _run(tmp_path)
  (tmp_path / "notes.txt").write_text("mine")
  (tmp_path / "stage1.unreadable").mkdir()
  config.seed = 5
  workdir.prepare(tmp_path, config, overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
  assert workdir.load_config(tmp_path).seed == 5


def test_a_config_json_without_a_newer_field_loads_with_a_warning_naming_it(tmp_path, caplog):
  config = config_lib.base_config()
  saved = json.loads(config_lib.to_json(config))
  del saved["stage2"]["ema_decay"]  # As written before the field existed.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with caplog.at_level(logging.WARNING):
    loaded = workdir.load_config(tmp_path)
  assert loaded.stage2.ema_decay == config.stage2.ema_decay
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and f"stage2.ema_decay={config.stage2.ema_decay!r}" in warnings[0]
  caplog.clear()
  _run(tmp_path / "complete")
  workdir.load_config(tmp_path / "complete")
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
  "field, value",
  [
    ("stage1.skip_nonfinite", True),
    ("stage2.log_every", 7),
    ("stage1.keep", 5),
    ("eval.seed", 9),
    ("latent_diffusion.steps", 3),  # A baseline's section: no stage reads it.
  ],
)
def test_fields_that_do_not_change_results_may_change_on_a_rerun(tmp_path, field, value):
  config = _run(tmp_path)
  section, name = field.split(".")
  config[section][name] = value
  workdir.prepare(tmp_path, config)
  assert (tmp_path / "stage1" / "10" / "data").exists()
  assert workdir.load_config(tmp_path)[section][name] == value


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_config_json_is_never_replaced(tmp_path, overwrite):
  (tmp_path / "config.json").write_text('{"model": "someone else\'s"}')
  (tmp_path / "samples").mkdir()
  before = tree_hash(tmp_path)
  with pytest.raises(WorkdirError, match="is not the config of an lsdm-jax run"):
    workdir.prepare(tmp_path, config_lib.base_config(), overwrite=overwrite)
  assert tree_hash(tmp_path) == before


def test_results_without_a_config_are_refused_unless_overwrite(tmp_path):
  (tmp_path / "stage1").mkdir()
  (tmp_path / "README").write_text("mine")
  before = tree_hash(tmp_path)
  with pytest.raises(WorkdirError, match=r"has no config.json but holds \['stage1'\]"):
    workdir.prepare(tmp_path, config_lib.base_config())
  assert tree_hash(tmp_path) == before
  workdir.prepare(tmp_path, config_lib.base_config(), overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["README", "config.json"]


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_a_workdir_that_cannot_be_a_directory_is_refused(tmp_path, where):
  (tmp_path / "f").write_text("x")
  target = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
  with pytest.raises(WorkdirError, match="cannot write to workdir"):
    workdir.prepare(target, config_lib.base_config())
  assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_full_or_unwritable_workdir_is_refused_before_anything_is_written(
  tmp_path, monkeypatch, code
):
  config = _run(tmp_path)
  before = tree_hash(tmp_path)

  def fail(fd):
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(os, "fsync", fail)  # The write test syncs its bytes to the disk.
  with pytest.raises(WorkdirError, match=os.strerror(code)):
    workdir.prepare(tmp_path, config)
  monkeypatch.undo()
  assert tree_hash(tmp_path) == before


def test_write_json_writes_sorted_indented_json_and_leaves_no_partial_file(tmp_path):
  path = workdir.write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
  assert path.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}'
  workdir.atomic_write(path, b"\x00bytes")
  assert path.read_bytes() == b"\x00bytes"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = workdir.atomic_write(tmp_path / "m.json", "old")

  def fail(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", fail)
  with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
    workdir.atomic_write(path, "new")
  assert path.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
