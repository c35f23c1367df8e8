"""Reference (real-data) Inception statistics, cached on disk so each is computed once.

A cache entry holds float64 mean and covariance (FID) and the float32 features themselves (KID,
precision & recall need the points). Its file name carries a hash of everything that decides the
numbers: the caller's key (dataset, split, count, and whatever identifies the images: the runner
passes the data's identity, see ``identity.py``) plus the extractor's protocol fields (backbone,
resize, antialias, weights sha256). So a change of data, weights or resize never reuses stale
statistics; it just computes a new entry. The key is all a lookup needs: a hit reads no image.

Writes are atomic; a file that is unreadable, mislabelled, or fails its content checksum is
reported with a ``ReferenceCacheWarning`` and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.fid import gaussian_stats
from ganforge.metrics.files import atomic_write_bytes, torch_save_bytes
from ganforge.metrics.inception import FeatureExtractor

# uint8 (N, C, H, W) images, whole or as an iterable of batches.
Images = Tensor | Iterable[Tensor]
# 2: `count` is the number asked for (None: all), no longer the number of images loaded, so a
# lookup needs no image; entries written under format 1 are simply never found.
CACHE_FORMAT = 2
REQUIRED_KEYS = ("dataset", "split", "count")


class ReferenceCacheWarning(UserWarning):
    """A reference-statistics cache file was unusable and is being recomputed."""


@dataclass(frozen=True)
class ReferenceStats:
    """Real-data statistics: ``key`` is the caller's key plus the extractor's protocol fields."""

    key: dict[str, Any]
    mean: Tensor  # (D,) float64
    cov: Tensor  # (D, D) float64, unbiased (n - 1)
    features: Tensor  # (N, D) float32, CPU
    path: Path | None = None

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])


def default_cache_dir() -> Path:
    return (
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ganforge" / "reference"
    )


def extract_features(images: Images, extractor: FeatureExtractor) -> tuple[Tensor, Tensor | None]:
    """Features (N, D) and logits (or None) of all images, as float32 on the CPU."""
    batches = [images] if isinstance(images, Tensor) else images
    feats: list[Tensor] = []
    logits: list[Tensor] = []
    for batch in batches:
        f, lg = extractor.extract(batch)
        feats.append(f.float().cpu())
        if lg is not None:
            logits.append(lg.float().cpu())
    if not feats:
        raise GanforgeError("no images to extract features from (empty iterable)")
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def full_key(key: Mapping[str, Any], extractor: FeatureExtractor) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in key]
    if missing:
        raise ConfigError(f"reference key {dict(key)} lacks {missing}; it needs {REQUIRED_KEYS}")
    count = key["count"]
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 2):
        raise ConfigError(f"reference key count={count!r} must be an integer >= 2 or None (all)")
    clash = sorted(set(key) & set(extractor.protocol_fields()))
    if clash:
        raise ConfigError(f"reference key fields {clash} are set by the extractor; drop them")
    return {**key, **extractor.protocol_fields(), "cache_format": CACHE_FORMAT}


def _key_json(key: Mapping[str, Any]) -> str:
    try:
        return json.dumps(key, sort_keys=True)
    except TypeError as e:
        raise ConfigError(f"reference key values must be plain str/int/float/bool: {e}") from e


def cache_path(key: Mapping[str, Any], cache_dir: str | os.PathLike[str]) -> Path:
    digest = hashlib.sha256(_key_json(key).encode()).hexdigest()[:16]

    def slug(v: Any) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(v))[:40]

    count = "all" if key["count"] is None else key["count"]
    return Path(cache_dir) / f"{slug(key['dataset'])}-{slug(key['split'])}-n{count}-{digest}.pt"


def _checksum(mean: Tensor, cov: Tensor, features: Tensor) -> str:
    digest = hashlib.sha256()
    for t in (mean, cov, features):
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fits(n: int, key: Mapping[str, Any]) -> bool:
    """Can `n` images be what `key` asked for? `count` is an upper bound: a split smaller than
    the count asked for gives all it has."""
    return n >= 2 and (key["count"] is None or n <= key["count"])


def _load(path: Path, key: dict[str, Any], num_features: int) -> ReferenceStats:
    """The cached entry, or ValueError saying why it cannot be trusted."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, foreign pickle: all mean "recompute"
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("key_json") != _key_json(key):
        raise ValueError("written for a different key")
    mean, cov, feats = blob.get("mean"), blob.get("cov"), blob.get("features")
    if not all(isinstance(t, Tensor) for t in (mean, cov, feats)):
        raise ValueError("tensors missing")
    d, n = num_features, feats.shape[0] if feats.dim() == 2 else -1
    if mean.shape != (d,) or cov.shape != (d, d) or feats.shape != (n, d) or not _fits(n, key):
        raise ValueError(
            f"shapes {mean.shape} {cov.shape} {feats.shape} ≠ ({d},) ({d}, {d}) (N, {d}) with "
            f"2 <= N <= count={key['count']}"
        )
    if blob.get("checksum") != _checksum(mean, cov, feats):
        raise ValueError("content checksum mismatch")
    return ReferenceStats(key, mean, cov, feats, path)


def reference_features(
    images_fn: Callable[[], Images],
    key: Mapping[str, Any],
    extractor: FeatureExtractor,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ReferenceStats:
    """Reference statistics for ``key``, from the cache or computed and cached.

    ``images_fn()`` returns the real uint8 images (a tensor or an iterable of batches) and is only
    called on a cache miss, so loading a dataset costs nothing once its statistics exist. ``key``
    needs ``dataset``, ``split`` and ``count`` (the number of images asked for, None for all;
    ``images_fn`` may yield fewer when the split is smaller, never more: checked), plus any other
    primitives that change the images (data arguments, file fingerprint, subset seed, ...).
    """
    fkey = full_key(key, extractor)
    path = cache_path(fkey, cache_dir if cache_dir is not None else default_cache_dir())
    if path.is_file():
        try:
            return _load(path, fkey, extractor.num_features)
        except ValueError as e:
            warnings.warn(
                f"reference cache {path} is unusable ({e}); recomputing it",
                ReferenceCacheWarning,
                stacklevel=2,
            )
    features, _ = extract_features(images_fn(), extractor)
    if not _fits(features.shape[0], fkey):
        raise GanforgeError(
            f"reference key says count={fkey['count']} but the images gave {features.shape[0]}; "
            f"there must be at least 2 and no more than the count"
        )
    mean, cov = gaussian_stats(features)
    blob = {
        "key_json": _key_json(fkey),
        "mean": mean,
        "cov": cov,
        "features": features,
        "checksum": _checksum(mean, cov, features),
    }
    atomic_write_bytes(path, torch_save_bytes(blob))
    return ReferenceStats(fkey, mean, cov, features, path)
