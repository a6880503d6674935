"""Errors a user can fix. The CLI prints their message (one line) and exits with status 2;
any other exception is a bug in encdec and keeps its traceback (exit status 1).

    raise ConfigError("unknown model.norm 'ln'; valid: layernorm, rmsnorm")
"""


class UserError(Exception):
  """A problem in what the user gave encdec: its message is one line that names the fix."""


class ConfigError(UserError, ValueError):
  """A bad config path, key or value (also a ValueError, as a bad value is)."""


class DataError(UserError):
  """Missing or malformed data: a dataset that is not prepared, an empty or broken corpus."""


class CheckpointError(UserError):
  """No checkpoint, none readable, or one that cannot be written (e.g. a full disk)."""


class TrainingDiverged(UserError):
  """A non-finite loss or gradient; the message names the step and the last good checkpoint."""
