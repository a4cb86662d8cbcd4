"""Errors a user can cause (bad config, bad data, missing or corrupt checkpoint, diverged run).

Command-line entry points print these as one clear line instead of a traceback.
"""

from midpg_jax.checkpoint import CheckpointError


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or inf."""


USER_ERRORS = (ValueError, FileNotFoundError, KeyError, CheckpointError, NonFiniteLossError)
