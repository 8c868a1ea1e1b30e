"""The work directory: its resolved config, and the checks that protect earlier runs.

A workdir belongs to one config. Rerunning the same command resumes; running another
config on it is refused unless `overwrite=True`, which then clears the old results. Only
fields that do not change what is computed may differ on a rerun: the stages' loop
settings (`config.OPERATIONAL_FIELDS`, e.g. `skip_nonfinite` after a NaN) and `eval.*`.

`prepare` runs after the config and the data were checked (`train.setup`) and before
anything is written, and it checks that the directory can take a write.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import ml_collections
from absl import logging

from lsdm_jax import config as config_lib
from lsdm_jax.checkpoints import TMP_MARK, UNREADABLE_SUFFIX
from lsdm_jax.errors import WorkdirError

RESULTS = (
  "stage1",
  "latents",
  "stage2",
  "samples",
  "metrics.json",
  "metrics.jsonl",
  "curves",
  "tensorboard",
  "stage1" + UNREADABLE_SUFFIX,
  "stage2" + UNREADABLE_SUFFIX,
)
_WRITE_TEST_BYTES = 1 << 16  # Enough to meet a full disk, small enough to be instant.


def atomic_write(path: str | pathlib.Path, data: str | bytes) -> pathlib.Path:
  """Writes `data` to a file beside `path`, then renames it over `path` (`os.replace`).

  A reader sees the old file or the whole new one, never a part; a write that fails
  leaves `path` as it was and removes its partial file.

  Args:
    path: the file to write; its directory must exist.
    data: the contents; `str` is written as UTF-8.

  Returns:
    `path` as a `pathlib.Path`.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  payload = data.encode() if isinstance(data, str) else data
  try:
    with open(tmp, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


def write_json(path: str | pathlib.Path, value) -> pathlib.Path:
  """Writes `value` as JSON (indent 2, sorted keys) to `path` with `atomic_write`."""
  return atomic_write(path, json.dumps(value, indent=2, sort_keys=True))


def prepare(
  workdir: str | pathlib.Path, config: ml_collections.ConfigDict, *, overwrite: bool = False
) -> pathlib.Path:
  """Creates or checks the workdir and writes `config.json`.

  Raises:
    WorkdirError: unwritable, or holding a run of another config (without `overwrite`).
  """
  path = pathlib.Path(workdir)
  _check_writable(path)
  resolved = json.loads(config_lib.to_json(config))
  saved_path = path / "config.json"
  if saved_path.exists():
    saved = _read_json(saved_path)
    if not (isinstance(saved, dict) and {"data", "stage1", "stage2"} <= set(saved)):
      raise WorkdirError(
        f"{str(saved_path)!r} is not the config of an lsdm-jax run; choose another --workdir"
      )
    if _results(saved) != _results(resolved):
      if not overwrite:
        raise WorkdirError(
          f"workdir {str(path)!r} holds a run with a different config "
          f"({_diff(_results(saved), _results(resolved))}); pass --overwrite to replace it, "
          "or choose another --workdir"
        )
      _clear(path)
    elif saved != resolved:
      logging.info("workdir %s: resuming with %s", path, _diff(saved, resolved))
  else:
    found = [name for name in RESULTS if (path / name).exists()]
    if found and not overwrite:
      raise WorkdirError(
        f"workdir {str(path)!r} has no config.json but holds {found}; pass --overwrite to "
        "replace them, or choose another --workdir"
      )
    _clear(path)
  for unfinished in path.glob(f"*{TMP_MARK}*"):  # E.g. latents whose save was killed.
    shutil.rmtree(unfinished, ignore_errors=True)
  try:
    write_json(saved_path, resolved)
  except OSError as e:
    raise WorkdirError(f"cannot write {str(saved_path)!r} ({e.strerror}); free space") from e
  return path


def _check_writable(path: pathlib.Path) -> None:
  """Creates `path` and writes (and syncs) a small file there, then removes it."""
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as f:
      f.write(b"\0" * _WRITE_TEST_BYTES)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    reason = e.strerror or type(e).__name__
    if path.exists() and not path.is_dir():
      reason = "it is a file"
    raise WorkdirError(
      f"cannot write to workdir {str(path)!r} ({reason}); choose another --workdir, fix its "
      "permissions or free space"
    ) from e


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _results(config: dict) -> dict:
  """The part of a resolved config that decides what a run computes (the baselines'
  sections do not: no stage reads them)."""
  out = {k: v for k, v in config.items() if k != "eval" and k not in config_lib.BASELINES}
  for stage in ("stage1", "stage2"):
    if isinstance(out.get(stage), dict):
      out[stage] = config_lib.result_fields(out[stage])
  return out


def _clear(path: pathlib.Path) -> None:
  for name in RESULTS:
    target = path / name
    if target.is_dir():
      shutil.rmtree(target)
    elif target.exists():
      target.unlink()


def _diff(a: dict, b: dict, prefix: str = "") -> str:
  keys = sorted(set(a) | set(b))
  for k in keys:
    if a.get(k) != b.get(k):
      if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
        return _diff(a[k], b[k], f"{prefix}{k}.")
      return f"{prefix}{k}: {a.get(k)!r} there, {b.get(k)!r} now"
  return "unreadable config.json"


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The resolved config of a run, from its `config.json`."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise WorkdirError(f"{str(path)!r} not found: is {str(workdir)!r} an lsdm-jax run directory?")
  saved = _flatten(json.loads(path.read_text()))
  config = config_lib.base_config()
  defaults = _flatten(config.to_dict())
  missing = [f"{k}={v!r}" for k, v in sorted(defaults.items()) if k not in saved]
  if missing:  # Fields added to lsdm-jax after the run was written.
    logging.warning(
      "%s predates %d config field(s); they take today's defaults: %s",
      path,
      len(missing),
      ", ".join(missing),
    )
  config.update_from_flattened_dict(saved)
  return config


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out
