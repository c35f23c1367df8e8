"""What the console commands share: a user error becomes one logged line and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ganforge.errors import GanforgeError

log = logging.getLogger("ganforge")
T = TypeVar("T")


def report_user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task so a GanforgeError (bad config, missing data, corrupt checkpoint) prints
    its message — which names the key or file and the fix — instead of a traceback."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except GanforgeError as err:
            log.error("%s: %s", type(err).__name__, err)
            sys.exit(2)

    return wrapper
