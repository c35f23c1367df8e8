"""Where the FID Inception weights file is: looked up, in order,

1. a configured file (``metrics.inception_weights=...``);
2. torch-fidelity's cache file (``default_weights_path()``:
   ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``);
3. torch-fidelity's own download URL (short timeout, so an offline machine fails in seconds);
4. otherwise a ``ConfigError`` saying how to build the file offline: ``ganforge-fetch-inception``.

Only paths here: reading the file is ``backbone.load_inception``'s job.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from ganforge.errors import ConfigError
from ganforge.metrics.files import atomic_write_bytes

WEIGHTS_FILENAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
FETCH_COMMAND = "ganforge-fetch-inception  (or: python -m ganforge.metrics.fetch_inception)"


def default_weights_path() -> Path:
    """torch-fidelity's (and torchmetrics') cache file for the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def missing_weights_error(detail: str) -> ConfigError:
    return ConfigError(
        f"FID Inception weights not found ({detail}). Build them offline with\n"
        f"    {FETCH_COMMAND}\n"
        f"which writes {default_weights_path()}, or point to an existing torch-fidelity "
        f"weights file with metrics.inception_weights=/path/to/{WEIGHTS_FILENAME}"
    )


def _download(url: str, dest: Path, timeout_s: float) -> None:
    """torch.hub.download_url_to_file has no timeout: a firewalled machine would hang for minutes.
    Same checks as torch.hub (sha256 prefix from the file name), but every socket op times out."""
    expected_prefix = dest.stem.rsplit("-", 1)[-1]
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data = response.read()
    actual = hashlib.sha256(data).hexdigest()
    if not actual.startswith(expected_prefix):
        raise OSError(f"downloaded file has sha256 {actual}, expected prefix {expected_prefix}")
    atomic_write_bytes(dest, data)


def resolve_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    timeout_s: float = 10.0,
) -> Path:
    """Find the Inception weights file (see the module docstring for the order)."""
    if path is not None:
        configured = Path(path).expanduser()
        if not configured.is_file():
            raise ConfigError(
                f"metrics.inception_weights={path} does not exist. Fix the path, or drop the "
                f"key to use {default_weights_path()} (build it offline with {FETCH_COMMAND})"
            )
        return configured
    cached = default_weights_path()
    if cached.is_file():
        return cached
    if not allow_download:
        raise missing_weights_error(f"no file at {cached}; download disabled")
    try:
        _download(URL_INCEPTION_V3, cached, timeout_s)
    except (OSError, ValueError) as e:  # URLError, socket timeouts and DNS failures are OSErrors
        raise missing_weights_error(f"no file at {cached}; download failed: {e}") from e
    return cached
