"""Errors a user can cause, as one family: `UserError`.

Command-line entry points print a `UserError` as one clear line (`error: ...`) instead of a
traceback. Anything else, a `ValueError` or `KeyError` raised inside our own code included, is a
bug of ours and keeps its traceback. Raise the most specific subclass below for a user's mistake.

The subclasses also derive from the builtin a caller would expect (`ValueError` for a bad value,
`RuntimeError` for a checkpoint), so `except ValueError` in user code keeps working.
"""


class UserError(Exception):
  """A mistake the user can fix: the message names what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
  """A bad config value, an unknown or misspelled config key, model or dataset name."""


class DataError(UserError, ValueError):
  """Bad or missing input data; the message names the file (and line and column where known)."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint is missing, unreadable or does not fit the configured model."""


class NonFiniteLossError(UserError, FloatingPointError):
  """The training loss became NaN or inf."""


class StorageError(UserError, OSError):
  """A fault of the machine, not of the code: a full disk, a read-only folder, a missing
  permission. The message names what was being done and where; what was there before is kept
  (midpg_jax/files.py)."""


class InUseError(UserError, RuntimeError):
  """A folder is in use by another process (a second trainer on a workdir that one is training)."""


# What entry points print as one line. Only our own family: a ValueError, KeyError, ... from our
# code is a bug and keeps its traceback.
USER_ERRORS = (UserError,)
