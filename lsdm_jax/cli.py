"""What the command-line tools share: flag parsing and one-line errors with exit code 2.

A problem the user can fix (a bad flag or config override, a config file that does not
load, invalid data, an unusable workdir, a full disk, a NaN in training) is printed as
one line `error: ...` on stderr, and the tool exits with code 2 without a traceback.
Set `LSDM_TRACEBACK=1` to get the traceback as well.
"""

from __future__ import annotations

import difflib
import errno
import logging as logging_std
import os
import re
import sys

from absl import flags, logging

from lsdm_jax.checkpoints import io_error_code
from lsdm_jax.errors import LsdmError

EXIT_USAGE = 2
# Operating-system errors that mean "this output cannot be written here".
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
_HINT = "see --helpfull for the flags; config fields are listed in the config file"


class _QuietLibraries(logging_std.Filter):
  """Drops the INFO chatter of Orbax and absl's own checkpoint plumbing from our logs."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    if record.levelno >= logging_std.WARNING:
      return True
    return not any(f"{os.sep}{name}{os.sep}" in record.pathname for name in ("orbax", "etils"))


def quiet_library_logs() -> None:
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
    value = flags.FLAGS[name].value
    # ml_collections defers a config file that failed to load to its first use.
    if type(value).__name__ == "_ErrorConfig":
      try:
        value.lock()
      except Exception as e:  # noqa: BLE001 - it raises the loading error here.
        cause = e.__cause__ or e
        fail(f"--{name}: cannot load the config file: {_last_line(cause)}")
  return rest


def _last_line(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return lines[-1] if lines else type(e).__name__


def _describe_parse_error(e: Exception, argv: list[str]) -> str:
  """One line for an error raised while parsing: an unknown config field, a config file
  that does not run, or anything else."""
  unknown = _unknown_override(argv)
  if unknown:
    return unknown
  frames = []
  tb = e.__traceback__
  while tb is not None:
    frames.append(tb.tb_frame.f_code.co_filename)
    tb = tb.tb_next
  if isinstance(e, SyntaxError):
    return f"the config file does not load: {e.msg} ({e.filename}, line {e.lineno})"
  where = next((f for f in reversed(frames) if "site-packages" not in f), None)
  detail = f"{type(e).__name__}: {_last_line(e)}"
  if where and "config_flags" in " ".join(frames):
    return f"the config file {where} failed: {detail}"
  return f"invalid command line: {detail} ({_HINT})"


def _unknown_override(argv: list[str]) -> str | None:
  """Names the first `--NAME.a.b=v` whose field does not exist in config flag NAME."""
  configs = {}
  for arg in argv[1:]:
    match = re.match(r"^--?(\w+)=(.*)$", arg)
    if match and match.group(1) in flags.FLAGS:
      if type(flags.FLAGS[match.group(1)].parser).__name__ == "ConfigFileFlagParser":
        configs[match.group(1)] = match.group(2)
  for arg in argv[1:]:
    match = re.match(r"^--?(?:no)?(\w+)\.([\w.]+)", arg)
    if not match or match.group(1) not in configs:
      continue
    try:  # The flag's value is not set when its overrides fail: load the file again.
      node = flags.FLAGS[match.group(1)].parser.parse(configs[match.group(1)])
      keys = list(node.keys())
    except Exception as e:  # noqa: BLE001 - a config file that does not load.
      cause = e.__cause__ or e
      return f"--{match.group(1)}: cannot load the config file: {_last_line(cause)}"
    path = match.group(2).split(".")
    for depth, part in enumerate(path):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        field = ".".join(path[: depth + 1])
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f"; did you mean {'.'.join([*path[:depth], close[0]])}?" if close else ""
        return f"unknown config field {field!r} in {arg.split('=')[0]}{hint} ({_HINT})"
      node = node[part]
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
