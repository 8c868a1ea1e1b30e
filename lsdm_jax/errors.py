"""Errors that the command-line tools report as one line and exit code 2.

Every problem a user can fix (a wrong config value, a missing data set, a malformed
file, an impossible split) raises a subclass of `LsdmError` whose message names the
problem *and* the fix. Programming errors stay ordinary exceptions with tracebacks.
"""


class LsdmError(Exception):
  """A user-fixable problem; the message says what is wrong and how to fix it."""


class ConfigError(LsdmError):
  """An invalid configuration value or combination."""


class DataError(LsdmError):
  """A missing, malformed or unusable data set."""


class CheckpointError(LsdmError):
  """No usable checkpoint where one is required."""


class WorkdirError(LsdmError):
  """The work directory cannot be used as asked (holds another run, unwritable...)."""


class NonFiniteError(LsdmError):
  """Training produced a NaN or infinite loss or gradient."""
