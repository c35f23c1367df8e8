"""User-facing errors: each names the config key or file at fault and the fix."""


class GanforgeError(Exception):
    """Base class for errors caused by the user's input, printed without a traceback."""


class ConfigError(GanforgeError, ValueError):
    """A config value is invalid or inconsistent with another."""


class DataError(GanforgeError, FileNotFoundError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(GanforgeError, ValueError):
    """A checkpoint is missing, corrupt, truncated or not a ganforge checkpoint."""


class NonFiniteLossError(GanforgeError, FloatingPointError):
    """A loss became NaN or inf; the update was not applied, so the weights are the last good."""
