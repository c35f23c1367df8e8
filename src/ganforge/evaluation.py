"""Evaluation of a generator against a dataset: Inception metrics for images, mode coverage for
2-D mixtures. Shared by the periodic-evaluation callback and `ganforge-eval`.

The Inception extractor is built lazily and held here, never by GANSystem, so no Inception weights
or metric state ever enter a training checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ganforge.data.base import SPLITS, InMemoryDataModule, to_uint8
from ganforge.errors import ConfigError, check_bool, check_int
from ganforge.metrics.evaluate import METRICS, evaluate
from ganforge.metrics.inception import RESIZE_MODES, InceptionFeatures
from ganforge.metrics.reference import reference_features
from ganforge.metrics.toy2d import mode_stats

log = logging.getLogger("ganforge")

Generate = Callable[[Tensor, Tensor | None], Tensor]  # (z, labels) -> samples in [-1, 1]


# Generated samples per evaluation at most: 4x the 50k of paper FIDs. Beyond it the stored
# features alone take gigabytes and a CPU needs days; such a number is a typo, refused up front.
MAX_SAMPLES = 200_000
MAX_BATCH = 4096
# An evaluation longer than this logs its progress with an estimate of the time left.
PROGRESS_AFTER_S = 10.0


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
        key: str = "metrics",
    ) -> None:
        """`key` is where these settings live in the config the user edits (`metrics` for
        ganforge-eval), so a bad value is reported as the key the user typed."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names) or not names:
            raise ConfigError(
                f"{key}.names={names!r} must be a list, e.g. {key}.names=[fid,kid,pr]"
            )
        unknown = sorted(set(names) - set(METRICS))
        if unknown:
            raise ConfigError(f"{key}.names has unknown {unknown}; choose from {list(METRICS)}")
        check_int(f"{key}.n_samples", n_samples, minimum=2)
        if n_samples > MAX_SAMPLES:
            raise ConfigError(
                f"{key}.n_samples={n_samples} is more than {MAX_SAMPLES} (50000 is the paper "
                f"standard); pick a smaller {key}.n_samples"
            )
        if reference_count is not None:
            check_int(f"{key}.reference_count", reference_count, minimum=2)
        if reference_split not in SPLITS:
            raise ConfigError(f"{key}.reference_split={reference_split!r} must be one of {SPLITS}")
        check_int(f"{key}.batch_size", batch_size)
        if batch_size > MAX_BATCH:
            raise ConfigError(f"{key}.batch_size={batch_size} is more than {MAX_BATCH}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"{key}.resize={resize!r} must be one of {list(RESIZE_MODES)}")
        check_bool(f"{key}.antialias", antialias)
        check_int(f"{key}.seed", seed, minimum=0)
        for name, value in (("inception_weights", inception_weights), ("cache_dir", cache_dir)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}.{name}={value!r} must be a path or null")
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
        fake = _with_progress(fake, self.n_samples)
        return evaluate(fake, reference, extractor, self.names, ema=ema, seed=self.seed)


def _with_progress(batches: Iterator[Tensor], total: int) -> Iterator[Tensor]:
    """The batches, logging every tenth of them with the time left once the evaluation has run
    long enough to be worth watching (a short periodic evaluation stays quiet)."""
    start, done, mark = time.monotonic(), 0, 1
    for batch in batches:
        yield batch  # the consumer extracts this batch's features before asking for the next
        done += batch.shape[0]
        elapsed = time.monotonic() - start
        if done * 10 >= mark * total:
            mark = done * 10 // total + 1
            if elapsed >= PROGRESS_AFTER_S and done < total:
                left = elapsed * (total - done) / done
                log.info(
                    "evaluation: %d/%d generated samples (%.0f s, about %.0f s left)",
                    done,
                    total,
                    elapsed,
                    left,
                )


def flat_metrics(results: dict[str, Any], stage: str = "val") -> dict[str, float]:
    """`stage/name` floats for loggers (KID's mean as `kid`, IS's mean as `is`)."""
    rename = {"kid_mean": "kid", "is_mean": "is"}
    return {
        f"{stage}/{rename.get(k, k)}": float(v)
        for k, v in results.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
