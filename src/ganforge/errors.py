"""User-facing errors: each names the config key or file at fault and the fix."""

from __future__ import annotations

import math
from typing import Any


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


class NonFiniteWeightsError(GanforgeError, FloatingPointError):
    """The networks' weights hold NaN or inf; saving them would overwrite a good checkpoint."""


# The predicates every value check reads (here, preflight's Checker, settings, reproduce).


def is_int(value: Any) -> bool:
    # bool is an int subclass, but `batch_size: true` in a yaml is a typo, not a 1.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The checks take the full key (`data.batch_size`) so the message names what the user typed.


def check_int(key: str, value: Any, minimum: int = 1) -> None:
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key}={value!r} must be {what}")


def check_positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}={value!r} must be a positive number")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
