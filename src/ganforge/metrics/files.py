"""File IO shared by the evaluation code: atomic writes, reproducible torch.save bytes, sha256."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would hide a shared cache file from other users; "xb" obeys umask.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def torch_save_bytes(obj: object) -> bytes:
    """torch.save into memory: the archive is then named "archive", not after a random tmp file,
    so the same tensors always give the same bytes (and sha256)."""
    import torch  # here, so that importing the helpers above stays free of torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
