"""Output locations checked before the work that fills them.

An evaluation or a sample grid that computes for minutes and then cannot save its result has lost
that work; these checks make such a mistake cost nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ganforge.errors import ConfigError


def writable_file(key: str, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """`path`, once it is sure a file can be written there: its folder exists (created when
    missing) and accepts a new file, and the path itself is not a directory (nor, without
    `overwrite`, an existing file). Else a ConfigError naming `key=path` and the fix."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a directory; pass a file path, e.g. {key}={path}/out")
    if path.exists() and not overwrite:
        raise ConfigError(f"{key}={path} exists; choose another path or pass overwrite=true")
    folder = path.parent
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(
            f"{key}={path} cannot be written: {blocker} is a file, not a folder; "
            "choose another path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A real probe, not os.access: that answers yes to root on a read-only mount.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}={path} cannot be written ({_reason(err)} for {folder}); choose a path in a "
            "writable folder"
        ) from None
    return path


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__
