"""One call from generated uint8 images to the registry's Inception metrics (FID, KID, precision &
recall, IS, ...: `metrics.registry`), sharing one Inception pass, with their protocol.

Typical use (the evaluation runner, ``ganforge.evaluation.Evaluator``, does this; build the
extractor lazily and keep it *off* the LightningModule, so no Inception weights enter a
checkpoint):

    extractor = InceptionFeatures(cfg.metrics.inception_weights)        # once per process
    ref = reference_features(lambda: real_uint8_batches(), {"dataset": "cifar10", "split": "train",
                             "count": 10_000}, extractor, cache_dir)    # cached on disk
    out = evaluate(fake_uint8_batches, ref, extractor, ema=True)
    # out == {"fid": .., "kid_mean": .., ["kid_std": ..,] "precision": .., "recall": ..,
    #         ["is_mean": .., "is_std": ..,] "protocol": {...}}
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluation.progress import duration
from ganforge.evaluation.reference import Images, ReferenceStats, extract_features
from ganforge.metrics.inception import FeatureExtractor
from ganforge.metrics.kid import kid_subset_for
from ganforge.metrics.registry import INCEPTION, REGISTRY, InceptionOptions, names_for

log = logging.getLogger("ganforge")
# The registry's entries computed from Inception features, in its order.
METRICS = tuple(names_for(INCEPTION))
# How generated float images become the uint8 the protocol is defined on: data.base.to_uint8
# with rounding (truncation would bias every pixel down by half a level, which FID notices).
QUANTIZATION = "uint8 = clamp(round((x - lo) / (hi - lo) * 255), 0, 255)"


@dataclass(frozen=True)
class Protocol:
    """How a set of numbers was produced; store ``to_dict()`` next to every number."""

    num_fake: int
    reference_dataset: str
    reference_split: str
    reference_count: int
    backbone: str
    resize: str
    antialias: bool
    weights_sha256: str
    quantization: str
    ema: bool | None  # generator weights: EMA (True) or raw (False); filled by the caller
    kid_subsets: int
    kid_subset_size: int  # the size used (see kid_subset_size), not the one asked for
    pr_k: int
    is_splits: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_protocol(reference: ReferenceStats, extractor: FeatureExtractor) -> None:
    fields = extractor.protocol_fields()
    differ = {k: (reference.key.get(k), v) for k, v in fields.items() if reference.key.get(k) != v}
    if differ:
        raise GanforgeError(
            f"reference statistics were computed under a different protocol {differ} "
            f"(reference, extractor); recompute them with this extractor"
        )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The scores on one CPU thread. FID's eigendecompositions are many short parallel sections;
    on a busy machine each waits, spinning, for a descheduled second thread, which made them
    several times slower than one thread (measured in the README, "ganforge-eval"); on an idle
    one more threads save at most part of what one takes, a few seconds. The Inception pass keeps
    every thread: its convolutions are long enough to gain from them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluate(
    fake: Images,
    reference: ReferenceStats,
    extractor: FeatureExtractor,
    metrics: Sequence[str] | None = None,
    *,
    ema: bool | None = None,
    quantization: str = QUANTIZATION,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    is_splits: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of generated uint8 images ``fake`` (N, C, H, W) (or an iterable of such batches)
    against ``reference``, sharing one Inception pass.

    ``metrics``: any of ``fid``, ``kid``, ``pr``, ``is``; default all, with ``is`` only when the
    extractor has logits (an explicit ``is`` without logits is an error: the converted weights
    from ganforge-fetch-inception have no fc layer). KID's subset size is
    ``kid_subset_for(kid_subset_size, n_fake, n_real)``, recorded in the protocol. Returns plain
    floats under ``fid``, ``kid_mean``, ``kid_std`` (left out when it measures nothing),
    ``precision``, ``recall``, ``is_mean``, ``is_std`` and the ``Protocol`` as a dict under
    ``protocol``. ``ema``/``quantization`` describe how ``fake`` was made, for the record.
    """
    if metrics is None:
        names = [m for m in METRICS if m != "is" or extractor.has_logits]
    else:
        names = list(dict.fromkeys(metrics))
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise ConfigError(
            f"metrics={list(metrics or [])}: unknown {unknown}; choose from {METRICS}"
        )
    if "is" in names and not extractor.has_logits:
        raise GanforgeError(
            "Inception Score needs the Inception fc layer, which these weights lack (files "
            "built by ganforge-fetch-inception have none). Drop 'is' from the metrics, or use "
            "torch-fidelity's original weights-inception-2015-12-05-6726825d.pth "
            "(metrics.inception_weights=...)"
        )
    _check_protocol(reference, extractor)

    features, logits = extract_features(fake, extractor)
    n_fake = int(features.shape[0])
    if n_fake < 2:
        raise GanforgeError(f"need at least 2 generated images, got {n_fake}")
    if "pr" in names and min(n_fake, reference.num_samples) <= pr_k:
        raise GanforgeError(
            f"precision & recall with k={pr_k} need more than {pr_k} images per set"
        )
    subset = kid_subset_for(kid_subset_size, n_fake, reference.num_samples)
    # The GPU for precision & recall's distances, when Inception runs on one.
    opts = InceptionOptions(kid_subsets, subset, pr_k, is_splits, seed, extractor.device)
    out: dict[str, Any] = {}
    started = time.monotonic()
    with _one_thread():
        for name in names:
            out.update(REGISTRY[name].compute(features, logits, reference, opts))
    # FID's eigendecompositions of 2048 x 2048 covariances take seconds on a CPU: said, not hidden.
    log.info(
        "evaluation: %s from the features in %s",
        ", ".join(names),
        duration(time.monotonic() - started),
    )
    out["protocol"] = Protocol(
        num_fake=n_fake,
        reference_dataset=str(reference.key["dataset"]),
        reference_split=str(reference.key["split"]),
        reference_count=reference.num_samples,
        backbone=str(extractor.protocol_fields().get("backbone", type(extractor).__name__)),
        resize=str(reference.key.get("resize", "")),
        antialias=bool(reference.key.get("antialias", False)),
        weights_sha256=str(reference.key.get("weights_sha256", "")),
        quantization=quantization,
        ema=ema,
        kid_subsets=kid_subsets,
        kid_subset_size=subset,
        pr_k=pr_k,
        is_splits=is_splits,
        seed=seed,
    ).to_dict()
    return out
