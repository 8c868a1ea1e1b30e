"""Tests of lsdm_jax.cli: user-fixable errors are one line on stderr and exit code 2.

Flag and config parsing are tested through the real entry point in
tests/experiments/main_test.py (absl flags are process-global).
"""

import errno

import pytest

from lsdm_jax import cli
from lsdm_jax.errors import DataError, NonFiniteError


def _exit(capsys, fn, *args):
  with pytest.raises(SystemExit) as e:
    cli.run_guarded(fn, *args)
  err = capsys.readouterr().err
  assert e.value.code == 2
  assert err.count("\n") == 1 and err.startswith("error: "), err
  return err


def _raise(exc):
  raise exc


def test_one_line_reduces_an_embedded_traceback_to_its_last_line():
  text = (
    "Error whilst parsing config file:\n\nTraceback (most recent call last):\n"
    '  File "c.py", line 3, in get_config\n    return 1 / 0\nZeroDivisionError: division by zero\n'
  )
  assert (
    cli.one_line(text) == "Error whilst parsing config file: ZeroDivisionError: division by zero"
  )
  assert cli.one_line("a\n  b\tc ") == "a b c"


def test_user_errors_are_one_line_and_exit_2(capsys, monkeypatch):
  monkeypatch.delenv("LSDM_TRACEBACK", raising=False)
  err = _exit(capsys, _raise, DataError("npz 'x.npz': 'labels' has negative values;\nfix them"))
  assert err == "error: npz 'x.npz': 'labels' has negative values; fix them\n"
  err = _exit(capsys, _raise, NonFiniteError("stage2: non-finite loss in step 3 of 12"))
  assert "stage2" in err and "step 3" in err


def test_interrupt_says_how_to_resume(capsys):
  assert "rerun the same command to resume" in _exit(capsys, _raise, KeyboardInterrupt())


@pytest.mark.parametrize(
  "exc",
  [
    OSError(errno.ENOSPC, "No space left on device", "/run/metrics.json"),
    PermissionError(errno.EACCES, "Permission denied", "/run/samples/grid.png"),
    # TensorStore (Orbax) reports the operating system's error in its message.
    ValueError("RESOURCE_EXHAUSTED: Failed writing: x [os_error_code='28']"),
  ],
)
def test_a_full_or_unwritable_disk_anywhere_is_one_line(capsys, monkeypatch, exc):
  monkeypatch.delenv("LSDM_TRACEBACK", raising=False)
  err = _exit(capsys, _raise, exc)
  assert "cannot write" in err and "rerun the same command to resume" in err


@pytest.mark.parametrize("exc", [ValueError("a bug"), FileNotFoundError(errno.ENOENT, "gone")])
def test_programming_errors_keep_their_traceback(exc):
  with pytest.raises(type(exc)):
    cli.run_guarded(_raise, exc)


def test_lsdm_traceback_shows_the_traceback(monkeypatch):
  monkeypatch.setenv("LSDM_TRACEBACK", "1")
  with pytest.raises(DataError):
    cli.run_guarded(_raise, DataError("bad"))
