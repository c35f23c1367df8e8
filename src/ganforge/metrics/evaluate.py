"""One call from generated uint8 images to FID, KID, precision & recall and IS, with its protocol.

Typical use (eval script or periodic-eval callback; build the extractor lazily there and keep it
and the metrics *off* the LightningModule, so no Inception weights or metric state enter a
checkpoint):

    extractor = InceptionFeatures(cfg.metrics.inception_weights)        # once per process
    ref = reference_features(lambda: real_uint8_batches(), {"dataset": "cifar10", "split": "train",
                             "count": 10_000}, extractor, cache_dir)    # cached on disk
    out = evaluate(fake_uint8_batches, ref, extractor, ema=True)
    # out == {"fid": .., "kid_mean": .., "kid_std": .., "precision": .., "recall": ..,
    #         ["is_mean": .., "is_std": ..,] "protocol": {...}}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.fid import FID, inception_score
from ganforge.metrics.inception import QUANTIZATION, FeatureExtractor
from ganforge.metrics.pr import precision_recall
from ganforge.metrics.reference import Images, ReferenceStats, extract_features

METRICS = ("fid", "kid", "pr", "is")


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
    kid_subset_size: int
    pr_k: int
    is_splits: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics do FID/KID math on features we already
    have, instead of running Inception once per metric."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def torchmetrics_fid(fake_features: Tensor, reference: ReferenceStats) -> float:
    """FID via (our compute-overriding subclass of) torchmetrics' FrechetInceptionDistance, its
    real state seeded from the cached reference statistics."""
    n, d = reference.num_samples, reference.mean.shape[0]
    metric = FID(feature=_Precomputed(d), reset_real_features=False)
    # Inverse of torchmetrics' compute(): cov = (cov_sum - n mean meanᵀ) / (n - 1).
    mean = reference.mean.to(torch.float64)
    metric.real_features_sum = mean * n
    metric.real_features_cov_sum = reference.cov.to(torch.float64) * (n - 1) + n * torch.outer(
        mean, mean
    )
    metric.real_features_num_samples = torch.tensor(n, dtype=torch.long)
    metric.update(fake_features, real=False)
    return float(metric.compute())


def torchmetrics_kid(
    fake_features: Tensor, real_features: Tensor, subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_Precomputed(real_features.shape[1]), subsets=subsets, subset_size=subset_size
        )
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    # KID draws subsets from the global RNG: seed it, without disturbing the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _check_protocol(reference: ReferenceStats, extractor: FeatureExtractor) -> None:
    fields = extractor.protocol_fields()
    differ = {k: (reference.key.get(k), v) for k, v in fields.items() if reference.key.get(k) != v}
    if differ:
        raise GanforgeError(
            f"reference statistics were computed under a different protocol {differ} "
            f"(reference, extractor); recompute them with this extractor"
        )


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
    ``min(kid_subset_size, n_fake, n_real)``. Returns plain floats under ``fid``, ``kid_mean``,
    ``kid_std``, ``precision``, ``recall``, ``is_mean``, ``is_std`` and the ``Protocol`` as a dict
    under ``protocol``. ``ema``/``quantization`` describe how ``fake`` was made, for the record.
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
    subset = min(kid_subset_size, n_fake, reference.num_samples)
    out: dict[str, Any] = {}
    if "fid" in names:
        out["fid"] = torchmetrics_fid(features, reference)
    if "kid" in names:
        out["kid_mean"], out["kid_std"] = torchmetrics_kid(
            features, reference.features, kid_subsets, subset, seed
        )
    if "pr" in names:
        device = getattr(extractor, "device", "cpu")  # the GPU, when Inception runs on one
        out["precision"], out["recall"] = precision_recall(
            reference.features.to(device), features.to(device), k=pr_k
        )
    if "is" in names:
        assert logits is not None  # has_logits was checked above
        out["is_mean"], out["is_std"] = inception_score(logits, splits=is_splits)
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
