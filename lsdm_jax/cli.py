"""What the command-line tools share: flag parsing and one-line errors with exit code 2.

A problem the user can fix (a bad flag or config override, a config file that does not
load, invalid data, an unusable workdir, a full disk, a NaN in training) is printed as
one line `error: ...` on stderr, and the tool exits with code 2 without a traceback.
Set `LSDM_TRACEBACK=1` to get the traceback as well.
"""

from __future__ import annotations

import errno
import logging as logging_std
import os
import re
import sys

import ml_collections
from absl import flags, logging
from ml_collections.config_flags.config_flags import is_config_flag

from lsdm_jax.checkpoints import io_error_code
from lsdm_jax.errors import LsdmError

EXIT_USAGE = 2
# Operating-system errors that mean "this output cannot be written here".
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
_HINT = "see --helpfull for the flags; config fields are listed in the config file"


class _QuietLibraries(logging_std.Filter):
  """Drops Orbax's and etils' INFO chatter, and Orbax's per-thread report of a failed write.

  Orbax logs a failed write from each of its worker threads with a traceback, then raises
  the same error in the caller, which `run_guarded` reports in one line.
  """

  def filter(self, record: logging_std.LogRecord) -> bool:
    if f"{os.sep}orbax{os.sep}" in record.pathname and record.levelno >= logging_std.ERROR:
      return "raised an exception" not in record.getMessage()
    if record.levelno >= logging_std.WARNING:
      return True
    return not any(f"{os.sep}{name}{os.sep}" in record.pathname for name in ("orbax", "etils"))


def quiet_library_logs() -> None:
  """Installs `_QuietLibraries` on absl's log handler (once); for command-line entry points."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with code 2."""
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def one_line(text: str) -> str:
  """A message on one line; an embedded traceback is reduced to its final line."""
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0]
    last = [line for line in text.splitlines() if line.strip()][-1]
    text = f"{head.strip().rstrip(':')}: {last.strip()}" if head.strip() else last
  return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag, config file or config override is one line and exit 2."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} ({_HINT})")
  except LsdmError as e:
    fail(str(e))
  except Exception as e:  # noqa: BLE001 - config files and ml_collections raise anything.
    if os.environ.get("LSDM_TRACEBACK"):
      raise
    fail(_describe_parse_error(e, argv))
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if is_config_flag(flag) and flag.value is not None:
      _check_config_loaded(name, flag.value)
  return rest


def _check_config_loaded(name: str, value) -> None:
  """Fails in one line when config flag `name` holds no ConfigDict.

  ml_collections defers the error of a config file that cannot be read to the config's
  first use; that use is here.
  """
  if isinstance(value, ml_collections.ConfigDict):
    return
  try:
    value.lock()
  except Exception as e:  # noqa: BLE001 - it raises the loading error here.
    fail(f"--{name}: cannot load the config file: {_last_line(e.__cause__ or e)}")
  fail(f"--{name}: get_config() returned a {type(value).__name__}, not a ConfigDict")


def _last_line(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return lines[-1] if lines else type(e).__name__


def _frames(e: BaseException) -> list[str]:
  """The file names of the frames `e` passed through, outermost first."""
  frames, tb = [], e.__traceback__
  while tb is not None:
    frames.append(tb.tb_frame.f_code.co_filename)
    tb = tb.tb_next
  return frames


def _describe_parse_error(e: Exception, argv: list[str]) -> str:
  """One line for an error raised while parsing: an unknown config field, a config file
  that does not load or run, or anything else."""
  frames = _frames(e)
  in_config_flags = "config_flags" in " ".join(frames)
  unknown = _unknown_field(e, argv) if isinstance(e, (KeyError, AttributeError)) else None
  if unknown:
    return unknown
  if isinstance(e, SyntaxError):
    return f"the config file does not load: {e.msg} ({e.filename}, line {e.lineno})"
  if isinstance(e, OSError) and in_config_flags:
    return f"cannot load the config file: {_last_line(e.__cause__ or e)}"
  where = next((f for f in reversed(frames) if "site-packages" not in f), None)
  detail = f"{type(e).__name__}: {_last_line(e)}"
  if where and in_config_flags:
    return f"the config file {where} failed: {detail}"
  return f"invalid command line: {detail} ({_HINT})"


_MISSING_KEY = re.compile(r"^\W*(\w+)")
_CLOSE_MATCH = re.compile(r'Did you mean "(\w+)" instead of "(\w+)"')


def _unknown_field(e: Exception, argv: list[str]) -> str | None:
  """Names the override of a config field that does not exist, from ml_collections' error
  (the missing key, and the close match it suggests) and the command line; None when no
  `--NAME.a.b` override has that key."""
  text = str(e)
  close = _CLOSE_MATCH.search(text)
  key = _MISSING_KEY.match(text)
  missing = close.group(2) if close else key.group(1) if key else None
  for arg in argv[1:]:
    match = re.match(r"^--?(?:no)?(\w+)\.([\w.]+)", arg)
    if not match or missing not in match.group(2).split("."):
      continue
    path = match.group(2).split(".")
    depth = path.index(missing)
    field = ".".join(path[: depth + 1])
    hint = f"; did you mean {'.'.join([*path[:depth], close.group(1)])}?" if close else ""
    return f"unknown config field {field!r} in {arg.split('=')[0]}{hint} ({_HINT})"
  return None


def run_guarded(fn, *args, **kwargs):
  """Calls fn; user-fixable errors become one line and exit 2 (LSDM_TRACEBACK=1 for more).

  User-fixable: any `LsdmError`, and an operating-system error while writing (a full
  disk, a read-only or unwritable directory), wherever it happens.
  """
  try:
    return fn(*args, **kwargs)
  except LsdmError as e:
    if os.environ.get("LSDM_TRACEBACK"):
      raise
    logging.flush()
    fail(str(e))
  except KeyboardInterrupt:
    fail("interrupted; rerun the same command to resume from the last checkpoint")
  except Exception as e:
    code = io_error_code(e)
    if code not in _WRITE_ERRORS or os.environ.get("LSDM_TRACEBACK"):
      raise
    logging.flush()
    where = f" {e.filename}" if isinstance(e, OSError) and e.filename else ""
    fail(
      f"cannot write{where}: {os.strerror(code)}; free space or fix permissions, then rerun "
      "the same command to resume from the last checkpoint"
    )
