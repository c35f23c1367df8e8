"""The evaluation runner: a generator against a dataset, scored by the registry's metrics
(`metrics.registry`) whose needs the data meets: Inception metrics for images, mode coverage for
2-D mixtures, the digit-triple modes for Stacked MNIST. Shared by the periodic-evaluation callback
and `ganforge-eval`.

The Inception extractor is built lazily and held here, never by GANSystem, so no Inception weights
or metric state ever enter a training checkpoint. The reference statistics are looked up by the
data's identity (`identity.py`) before any real image is read; only a miss loads the split.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from ganforge.data.base import SPLITS, InMemoryDataModule, to_uint8
from ganforge.errors import ConfigError, check_bool, check_int
from ganforge.evaluation.identity import data_identity
from ganforge.evaluation.progress import duration, with_progress
from ganforge.evaluation.reference import ReferenceStats, full_key, reference_features
from ganforge.evaluation.scores import evaluate
from ganforge.metrics import digits, stacked
from ganforge.metrics.inception import RESIZE_MODES, FeatureExtractor, InceptionFeatures
from ganforge.metrics.registry import DIGITS, INCEPTION, NAMES, POINTS2D, REGISTRY, Metric
from ganforge.metrics.toy2d import DEFAULT_SHARE, QUALITY_SIGMAS

log = logging.getLogger("ganforge")

Generate = Callable[[Tensor, Tensor | None], Tensor]  # (z, labels) -> samples in [-1, 1]


class Mixture2D(Protocol):
    """What mode coverage needs of a 2-D dataset (ganforge's toy mixtures)."""

    modes: Tensor  # (k, 2) mode centres
    std: float  # each mode's standard deviation


# Generated samples per evaluation at most: 4x the 50k of paper FIDs. Beyond it the stored
# features alone take gigabytes and a CPU needs days; such a number is a typo, refused up front.
MAX_SAMPLES = 200_000
MAX_BATCH = 4096


def meets(need: str, datamodule: Any) -> bool:
    """Whether `datamodule` gives what a metric of `need` needs (see `metrics.registry`)."""
    if need == INCEPTION:
        return bool(datamodule.is_image)
    if need == POINTS2D:
        return not datamodule.is_image and hasattr(datamodule, "modes")
    assert need == DIGITS, need
    return isinstance(datamodule, stacked.DigitData)


class Evaluator:
    def __init__(
        self,
        # Every entry but IS (which needs Inception weights with the fc layer); each data runs
        # those it can be scored by.
        names: Sequence[str] = ("fid", "kid", "pr", "stacked_modes", "modes2d"),
        n_samples: int = 5000,
        reference_split: str = "train",
        reference_count: int | None = None,
        inception_weights: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 50,
        resize: str = "tf1_bilinear",
        antialias: bool = False,
        seed: int = 0,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        mode_min_count: int | None = None,
        key: str = "metrics",
        extractor: FeatureExtractor | None = None,
    ) -> None:
        """`key` is where these settings live in the config the user edits (`metrics` for
        ganforge-eval), so a bad value is reported as the key the user typed.

        `kid_subset_size` is an upper bound: KID draws subsets of at most half of each sample
        (see `scores.kid_subset_for`). `mode_min_count` (2-D mixtures): the high-quality points a
        mode needs to count as captured; None keeps the VEEGAN/PacGAN share, a fifth of the
        uniform share n/k (20 of 2,500 samples on 25 modes). `extractor`: a ready feature
        extractor (a test's fake, or one shared between evaluators); None builds the Inception
        extractor from these settings on first use."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names) or not names:
            raise ConfigError(
                f"{key}.names={names!r} must be a list, e.g. {key}.names=[fid,kid,pr]"
            )
        unknown = sorted(set(names) - set(NAMES))
        if unknown:
            raise ConfigError(f"{key}.names has unknown {unknown}; choose from {list(NAMES)}")
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
        check_int(f"{key}.kid_subsets", kid_subsets)
        check_int(f"{key}.kid_subset_size", kid_subset_size, minimum=2)
        if mode_min_count is not None and (
            isinstance(mode_min_count, bool)
            or not isinstance(mode_min_count, int)
            or mode_min_count < 1
        ):
            raise ConfigError(
                f"{key}.mode_min_count={mode_min_count!r} must be a positive integer (the "
                f"high-quality points a mode needs, e.g. 1 as in PacGAN) or null (a fifth of "
                f"the uniform share per mode)"
            )
        for name, value in (("inception_weights", inception_weights), ("cache_dir", cache_dir)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}.{name}={value!r} must be a path or null")
        self.key = key
        self.names, self.n_samples = list(dict.fromkeys(names)), n_samples
        self.reference_split, self.reference_count = reference_split, reference_count
        self.inception_weights, self.cache_dir = inception_weights, cache_dir
        self.batch_size, self.resize, self.antialias, self.seed = (
            batch_size,
            resize,
            antialias,
            seed,
        )
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.mode_min_count = mode_min_count
        self._extractor = extractor
        self._classifier: tuple[str, digits.TrainedClassifier] | None = None  # (identity, it)
        # The last reference statistics, by full key: periodic evaluations in one run reuse them
        # without re-reading the cache file (a changed key simply misses).
        self._reference: tuple[dict[str, Any], ReferenceStats] | None = None

    def extractor(self, device: torch.device) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = InceptionFeatures(
                self.inception_weights,
                resize=self.resize,
                antialias=self.antialias,
                batch_size=self.batch_size,
            )
        return self._extractor.to(device)

    def metrics_for(self, datamodule: Any) -> list[Metric]:
        """The configured entries whose needs `datamodule` meets; a ConfigError when none is."""
        chosen = [REGISTRY[n] for n in self.names if meets(REGISTRY[n].needs, datamodule)]
        if not chosen:
            fits = [n for n in NAMES if meets(REGISTRY[n].needs, datamodule)]
            raise ConfigError(
                f"{self.key}.names={self.names}: data={datamodule.name} cannot be scored by any "
                f"of them; add one of {fits}"
            )
        return chosen

    def needs(self, datamodule: Any) -> set[str]:
        """What this evaluation will need on `datamodule` (`inception`, `points2d`, `digits`):
        callers resolve it before any work (Inception weights, the digit classifier)."""
        return {m.needs for m in self.metrics_for(datamodule)}

    def prepare(self, datamodule: Any) -> None:
        """Everything an evaluation of `datamodule` needs that can fail, before the first sample:
        the digit classifier (trained once, cached) and its accuracy floor. The Inception weights
        are the caller's (`fetch_inception.ensure_weights`), as they may download."""
        if DIGITS in self.needs(datamodule):
            self.classifier(datamodule)

    def classifier(self, datamodule: stacked.DigitData) -> digits.TrainedClassifier:
        """The digit classifier for `datamodule`'s digits, held for the next evaluation; refused
        under the accuracy floor."""
        identity = repr(sorted(datamodule.digit_identity().items()))
        if self._classifier is None or self._classifier[0] != identity:
            self._classifier = (identity, digits.load_or_train(datamodule, self.cache_dir))
        trained = self._classifier[1]
        trained.check()
        return trained

    def check_final(self, datamodule: Any, n_samples: int | None = None) -> None:
        """A final score (ganforge-eval) of Stacked-MNIST modes with fewer samples than modes is
        not comparable with anything: refused before sampling."""
        n = n_samples or self.n_samples
        if DIGITS in self.needs(datamodule) and n < stacked.MIN_COMPARABLE:
            raise ConfigError(
                f"{self.key}.n_samples={n}: a Stacked-MNIST mode count from fewer than "
                f"{stacked.MIN_COMPARABLE} samples cannot show all 1,000 modes and compares with "
                f"nothing; set {self.key}.n_samples={stacked.DEFAULT_N} (VEEGAN/PacGAN) or "
                f"{stacked.UNROLLED_N} (Unrolled GAN)"
            )

    def fake_batches(
        self, generate: Generate, z_dim: int, n_classes: int | None, device, n: int | None = None
    ) -> Iterator[Tensor]:
        """Generated samples in batches from a seeded noise stream: evaluations are repeatable
        (and each need's pass over them sees the same samples)."""
        g = torch.Generator().manual_seed(self.seed)
        total = n or self.n_samples
        for start in range(0, total, self.batch_size):
            size = min(self.batch_size, total - start)
            z = torch.randn(size, z_dim, generator=g).to(device)
            y = torch.randint(n_classes, (size,), generator=g).to(device) if n_classes else None
            yield generate(z, y)

    def __call__(
        self,
        generate: Generate,
        z_dim: int,
        n_classes: int | None,
        datamodule: InMemoryDataModule,
        device: torch.device | str = "cpu",
        ema: bool | None = None,
        n_samples: int | None = None,
    ) -> dict[str, Any]:
        """Plain metric names -> floats, plus `protocol` (every need's fields in one dict).
        `n_samples` overrides the configured count (the end of training uses the protocol's)."""
        device = torch.device(device)
        n = n_samples or self.n_samples
        chosen = self.metrics_for(datamodule)
        # Said before the slow parts (Inception's weights, the reference statistics) begin.
        real = (
            ""
            if {m.needs for m in chosen} != {INCEPTION}
            else (
                f" against {'all' if self.reference_count is None else f'{self.reference_count:,}'}"
                f" real images ({self.reference_split} split)"
            )
        )
        log.info(
            "evaluation: %s on %s generated samples%s",
            ", ".join(m.name for m in chosen),
            f"{n:,}",
            real,
        )
        out: dict[str, Any] = {}
        protocol: dict[str, Any] = {}
        for need in dict.fromkeys(m.needs for m in chosen):  # one pass over the samples per need
            entries = [m for m in chosen if m.needs == need]

            def batches() -> Iterator[Tensor]:
                return self.fake_batches(generate, z_dim, n_classes, device, n)

            if need == INCEPTION:
                results = self.inception(batches(), entries, datamodule, device, ema, n)
            elif need == POINTS2D:
                fake = torch.cat(list(batches()))
                results = self.mode_coverage(fake, cast(Mixture2D, datamodule), entries)
            else:
                data = cast(stacked.DigitData, datamodule)
                results = self.digit_modes(batches, data, ema, n, entries)
            protocol.update(results.pop("protocol"))
            out.update(results)
        out["protocol"] = protocol
        return out

    def inception(
        self,
        batches: Iterator[Tensor],
        entries: list[Metric],
        datamodule: InMemoryDataModule,
        device: torch.device,
        ema: bool | None,
        n: int,
    ) -> dict[str, Any]:
        extractor = self.extractor(device)
        reference = self.reference(datamodule, extractor)
        fewer = f"{self.key}.n_samples={max(2, n // 2)}"
        fake = with_progress(
            (to_uint8(x).cpu() for x in batches), n, "generated samples", fewer=fewer
        )
        return evaluate(
            fake,
            reference,
            extractor,
            [m.name for m in entries],
            ema=ema,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            seed=self.seed,
        )

    def digit_modes(
        self,
        batches: Callable[[], Iterator[Tensor]],
        datamodule: stacked.DigitData,
        ema: bool | None,
        n: int,
        entries: Sequence[Metric] = (REGISTRY["stacked_modes"],),
    ) -> dict[str, Any]:
        """Stacked-MNIST modes, with how they were counted under `protocol`. `batches()` starts
        the seeded sample stream afresh (for each entry)."""
        trained = self.classifier(datamodule)
        stats: dict[str, Any] = {}
        for entry in entries:
            fewer = f"{self.key}.n_samples={max(2, n // 2)}"
            samples = with_progress(batches(), n, "generated samples", fewer=fewer)
            stats.update(entry.compute(samples, datamodule, trained))
        stats["protocol"] = {
            "num_fake": n,
            # Fewer samples than modes: not comparable with the papers' 26,000 (or anything).
            "comparable": n >= stacked.MIN_COMPARABLE,
            "mode_rule": "a digit triple seen at least once",
            "classifier": f"ganforge DigitClassifier, recipe v{digits.RECIPE['version']}",
            "classifier_accuracy": trained.accuracy,  # on held-out digits it never saw
            "accuracy_floor": digits.ACCURACY_FLOOR,
            "digit_source": trained.source,
            "image_to_digits": datamodule.resize,  # 28 px as is, or 32 px's border cropped
            "seed": self.seed,
            "ema": ema,
        }
        return stats

    def reference(
        self, datamodule: InMemoryDataModule, extractor: FeatureExtractor
    ) -> ReferenceStats:
        """The real split's statistics: looked up by the data's identity, so a cache hit reads
        no image; only a miss loads the split (and, for data without a readable identity, every
        evaluation loads it to hash the pixels, as correct and as slow as no cache)."""
        key: dict[str, Any] = {
            "dataset": datamodule.name,
            "split": self.reference_split,
            "count": self.reference_count,
            "seed": self.seed,  # which subset real_samples draws
        }
        identity = data_identity(datamodule)
        if identity is not None:
            key.update(identity)
        else:
            real = self._real(datamodule)
            key["images_sha1"] = hashlib.sha1(real.contiguous().numpy().tobytes()).hexdigest()
        if self._reference is not None and self._reference[0] == full_key(key, extractor):
            return self._reference[1]
        started, missed = time.monotonic(), []

        def real_batches() -> Iterator[Tensor]:
            missed.append(True)
            return self._real_batches(datamodule)

        stats = reference_features(real_batches, key, extractor, self.cache_dir)
        if not missed:
            log.info(
                "evaluation: reference statistics of %s real %s images read from the cache in %s "
                "(%s)",
                f"{stats.num_samples:,}",
                datamodule.name,
                duration(time.monotonic() - started),
                stats.path,
            )
        self._reference = (stats.key, stats)
        return stats

    def _real_batches(self, datamodule: InMemoryDataModule) -> Iterator[Tensor]:
        """A cache miss's real images in batches, announced with their count and the key that
        takes fewer (the whole split of MNIST-5k is ~15 min on a CPU core), then timed."""
        real = self._real(datamodule)
        what = f"real {datamodule.name} images through Inception for the reference statistics"
        fewer = f"{self.key}.reference_count={min(250, len(real) // 2)}"
        log.info(
            "evaluation: %s %s (not cached yet: once per dataset, count and seed; %s to use fewer)",
            f"{len(real):,}",
            what,
            fewer,
        )
        return with_progress(iter(real.split(self.batch_size)), len(real), what, fewer=fewer)

    def _real(self, datamodule: InMemoryDataModule) -> Tensor:
        return datamodule.real_samples(self.reference_count, self.reference_split, self.seed)

    def mode_coverage(
        self,
        fake: Tensor,
        datamodule: Mixture2D,
        entries: Sequence[Metric] = (REGISTRY["modes2d"],),
    ) -> dict[str, Any]:
        """Mode coverage of 2-D samples, with the criterion it used under `protocol`."""
        n, k = fake.shape[0], len(datamodule.modes)
        stats: dict[str, Any] = {}
        for entry in entries:
            stats.update(entry.compute(fake, datamodule, self.mode_min_count))
        stats["protocol"] = {
            "num_fake": n,
            "quality_sigmas": QUALITY_SIGMAS,
            # mode_stats' default share as the count it amounts to at this n (counts are whole).
            "mode_min_count": self.mode_min_count or math.ceil(DEFAULT_SHARE * n / k),
            "seed": self.seed,
        }
        return stats


def flat_metrics(results: dict[str, Any], stage: str = "val") -> dict[str, float]:
    """`stage/name` floats for loggers (KID's mean as `kid`, IS's mean as `is`)."""
    rename = {"kid_mean": "kid", "is_mean": "is"}
    return {
        f"{stage}/{rename.get(k, k)}": float(v)
        for k, v in results.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
