"""Evaluation of a generator against a dataset: Inception metrics for images, mode coverage for
2-D mixtures. Shared by the periodic-evaluation callback and `ganforge-eval`.

The Inception extractor is built lazily and held here, never by GANSystem, so no Inception weights
or metric state ever enter a training checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ganforge.data.base import InMemoryDataModule, to_uint8
from ganforge.errors import ConfigError
from ganforge.metrics.evaluate import METRICS, evaluate
from ganforge.metrics.inception import InceptionFeatures
from ganforge.metrics.reference import reference_features
from ganforge.metrics.toy2d import mode_stats

Generate = Callable[[Tensor, Tensor | None], Tensor]  # (z, labels) -> samples in [-1, 1]


class Evaluator:
    def __init__(
        self,
        names: Sequence[str] = ("fid", "kid", "pr"),
        n_samples: int = 5000,
        reference_split: str = "train",
        reference_count: int | None = None,
        inception_weights: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 50,
        resize: str = "tf1_bilinear",
        antialias: bool = False,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(names) - set(METRICS))
        if unknown:
            raise ConfigError(f"metrics.names has unknown {unknown}; choose from {list(METRICS)}")
        if n_samples < 2:
            raise ConfigError(f"metrics.n_samples={n_samples} must be at least 2")
        self.names, self.n_samples = list(names), n_samples
        self.reference_split, self.reference_count = reference_split, reference_count
        self.inception_weights, self.cache_dir = inception_weights, cache_dir
        self.batch_size, self.resize, self.antialias, self.seed = (
            batch_size,
            resize,
            antialias,
            seed,
        )
        self._extractor: InceptionFeatures | None = None

    def extractor(self, device: torch.device) -> InceptionFeatures:
        if self._extractor is None:
            self._extractor = InceptionFeatures(
                self.inception_weights,
                resize=self.resize,
                antialias=self.antialias,
                batch_size=self.batch_size,
            )
        return self._extractor.to(device)

    def fake_batches(
        self, generate: Generate, z_dim: int, n_classes: int | None, device
    ) -> Iterator[Tensor]:
        """Generated samples in batches from a seeded noise stream: evaluations are repeatable."""
        g = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.n_samples, self.batch_size):
            n = min(self.batch_size, self.n_samples - start)
            z = torch.randn(n, z_dim, generator=g).to(device)
            y = torch.randint(n_classes, (n,), generator=g).to(device) if n_classes else None
            yield generate(z, y)

    def __call__(
        self,
        generate: Generate,
        z_dim: int,
        n_classes: int | None,
        datamodule: InMemoryDataModule,
        device: torch.device | str = "cpu",
        ema: bool | None = None,
    ) -> dict[str, Any]:
        """Plain metric names -> floats (plus `protocol` for Inception metrics)."""
        device = torch.device(device)
        if not datamodule.is_image:
            fake = torch.cat(list(self.fake_batches(generate, z_dim, n_classes, device)))
            return mode_stats(fake, datamodule.modes, datamodule.std)
        extractor = self.extractor(device)
        real = datamodule.real_samples(self.reference_count, self.reference_split, self.seed)
        key = {
            "dataset": datamodule.name,
            "split": self.reference_split,
            "count": int(real.shape[0]),
            "image_size": datamodule.image_size,
            # The images themselves, hashed: a changed root, subset or holdout is a new reference.
            "images_sha1": hashlib.sha1(real.contiguous().numpy().tobytes()).hexdigest(),
        }
        reference = reference_features(lambda: real, key, extractor, self.cache_dir)
        fake = (to_uint8(x).cpu() for x in self.fake_batches(generate, z_dim, n_classes, device))
        return evaluate(fake, reference, extractor, self.names, ema=ema, seed=self.seed)


def flat_metrics(results: dict[str, Any], stage: str = "val") -> dict[str, float]:
    """`stage/name` floats for loggers (KID's mean as `kid`, IS's mean as `is`)."""
    rename = {"kid_mean": "kid", "is_mean": "is"}
    return {
        f"{stage}/{rename.get(k, k)}": float(v)
        for k, v in results.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
