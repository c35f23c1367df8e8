"""Finding dataset files on disk, downloading them through torchvision when asked, and the one
clean DataError when neither works."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from ganforge.errors import DataError

# Seconds one socket operation may stall before a download gives up: without it a firewalled
# network (packets dropped, not refused) hangs `setup` forever. A slow but live download is fine.
DOWNLOAD_STALL_TIMEOUT = 60.0


def existing(path: Path) -> Path | None:
    """`path` itself, else its `.gz` twin, else None (torchvision keeps both, mirrors only .gz)."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file; a broken gzip is a DataError."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path}: cannot read ({e}); delete it and download or copy it again"
        ) from e


def find_dir(dirs: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first of `dirs` holding every one of `names` (plain or .gz)."""
    for d in dirs:
        if all(existing(d / name) for name in names):
            return d
    return None


def locate(
    what: str,
    names: Sequence[str],
    dirs: Sequence[Path],
    root: str,
    download: bool,
    fetch: Callable[[], object],
    fix: str,
) -> Path:
    """The folder holding `names`: searched in `dirs`, then once more after `fetch()` (a
    torchvision download into `root`) when `download` is true.

    Every way of failing ends in the same DataError, naming data.root, data.download and the fix.
    """
    found = find_dir(dirs, names)
    reason = "data.download=false, so nothing was downloaded"
    if found is None and download:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_STALL_TIMEOUT)
        try:
            fetch()
            found = find_dir(dirs, names)
            reason = "data.download=true fetched files, but not these"
        except Exception as e:  # any failure (no network, bad checksum, full disk) reads the same
            detail = " ".join(str(e).split())  # torchvision's messages span several lines
            reason = f"data.download=true but the download failed ({type(e).__name__}: {detail})"
        finally:
            socket.setdefaulttimeout(previous)
    if found is None:
        tried = ", ".join(str(d) for d in dirs)
        raise DataError(
            f"{what} not found: looked for {', '.join(names)} (or .gz) in {tried} "
            f"(data.root={root}); {reason}. Fix: {fix}"
        )
    return found
