"""What the command-line tools share: flag parsing and one-line errors with exit code 2."""

from __future__ import annotations

import logging as logging_std
import os
import sys

from absl import flags, logging

from lsdm_jax.errors import LsdmError

EXIT_USAGE = 2


class _QuietLibraries(logging_std.Filter):
  """Drops the INFO chatter of Orbax and absl's own checkpoint plumbing from our logs."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    if record.levelno >= logging_std.WARNING:
      return True
    return not any(f"{os.sep}{name}{os.sep}" in record.pathname for name in ("orbax", "etils"))


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())


def fail(message: str) -> None:
  """Prints `error: message` as one line on stderr and exits with code 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag or config override is one line and exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = " ".join(str(e).split())
    fail(f"{text} (see --helpfull for the flags; config fields are listed in the config file)")
  except LsdmError as e:
    fail(str(e))
  return []


def run_guarded(fn, *args, **kwargs):
  """Calls fn; user-fixable errors become one line and exit 2 (LSDM_TRACEBACK=1 for more)."""
  try:
    return fn(*args, **kwargs)
  except LsdmError as e:
    if os.environ.get("LSDM_TRACEBACK"):
      raise
    logging.flush()
    fail(str(e))
  except KeyboardInterrupt:
    fail("interrupted; rerun the same command to resume from the last checkpoint")
