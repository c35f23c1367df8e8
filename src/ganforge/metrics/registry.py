"""Every metric ganforge computes, one entry each: its name in `metrics.names`, the `val/` keys it
logs with their direction, what it needs of the data, and the function that computes it.

The evaluator (`evaluation.runner`) runs the configured entries whose needs the data meets;
`ganforge-eval`, the best checkpoint (`callbacks.evaluation`), `ganforge-report`'s ranking and
the training plots ask this table for names and directions. The next metric is its own module
plus one entry here.

What each need means, and the signature of its entries' `compute`:

* `inception` (image data): `compute(features, logits, reference, opts)`: the generated images'
  Inception features (N, D) and logits (or None), the cached real-data `ReferenceStats`, and
  the `InceptionOptions`. All such entries share one Inception pass.
* `points2d` (2-D Gaussian mixtures, `evaluation.runner.Mixture2D`): `compute(samples, data,
  min_count)`: all (N, 2) generated points, the mixture and the captured-mode rule.
* `digits` (Stacked MNIST, `stacked.DigitData`): `compute(batches, data, classifier)`: the
  generated images in [-1, 1], batch by batch, and the trained digit classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ganforge.metrics import stacked, toy2d
from ganforge.metrics.fid import frechet_distance, gaussian_stats
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kid
from ganforge.metrics.pr import precision_recall

if TYPE_CHECKING:
    from ganforge.evaluation.reference import ReferenceStats

MINIMIZE, MAXIMIZE = "minimize", "maximize"
INCEPTION, POINTS2D, DIGITS = "inception", "points2d", "digits"
NEEDS = (INCEPTION, POINTS2D, DIGITS)


@dataclass(frozen=True)
class InceptionOptions:
    """The Inception metrics' settings, as `evaluation.scores.evaluate` resolved them."""

    kid_subsets: int
    kid_subset_size: int  # the size used, after `kid.kid_subset_for`
    pr_k: int
    is_splits: int
    seed: int
    device: torch.device  # where precision & recall's distances are computed


@dataclass(frozen=True)
class Metric:
    name: str  # as listed in metrics.names
    keys: dict[str, str]  # logged name (under val/) -> MINIMIZE or MAXIMIZE; the first is primary
    needs: str  # one of NEEDS
    compute: Callable[..., dict[str, float]]  # returns plain result names -> floats
    # The key counting the modes the samples cover, for metrics that count them: the training
    # plots' modes curve and the health monitor's mode_collapse rule read it.
    mode_count: str | None = None

    @property
    def primary(self) -> str:
        return next(iter(self.keys))


def _fid(features: Tensor, logits, reference: ReferenceStats, opts) -> dict[str, float]:
    # The cached (mean, cov) as they are; the real side first, as torchmetrics orders them.
    return {"fid": frechet_distance(reference.mean, reference.cov, *gaussian_stats(features))}


def _kid(features: Tensor, logits, reference: ReferenceStats, opts) -> dict[str, float]:
    mean, std = kid(features, reference.features, opts.kid_subsets, opts.kid_subset_size, opts.seed)
    return {"kid_mean": mean} if std is None else {"kid_mean": mean, "kid_std": std}


def _pr(features: Tensor, logits, reference: ReferenceStats, opts) -> dict[str, float]:
    real, fake = reference.features.to(opts.device), features.to(opts.device)
    precision, recall = precision_recall(real, fake, k=opts.pr_k)
    return {"precision": precision, "recall": recall}


def _is(features: Tensor, logits: Tensor | None, reference, opts) -> dict[str, float]:
    assert logits is not None  # evaluate() refuses `is` without the fc layer
    mean, std = inception_score(logits, splits=opts.is_splits)
    return {"is_mean": mean, "is_std": std}


def _modes2d(samples: Tensor, data: Any, min_count: int | None) -> dict[str, float]:
    return toy2d.mode_stats(samples, data.modes, data.std, min_count=min_count)


def _stacked(batches: Iterable[Tensor], data: Any, classifier: Any) -> dict[str, float]:
    return stacked.mode_stats(batches, data, classifier)


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("fid", {"fid": MINIMIZE}, INCEPTION, _fid),
        Metric("kid", {"kid": MINIMIZE}, INCEPTION, _kid),
        Metric("pr", {"recall": MAXIMIZE, "precision": MAXIMIZE}, INCEPTION, _pr),
        Metric("is", {"is": MAXIMIZE}, INCEPTION, _is),
        Metric(
            "stacked_modes",
            {"modes": MAXIMIZE, "reverse_kl": MINIMIZE, "digit_confidence": MAXIMIZE},
            DIGITS,
            _stacked,
            mode_count="modes",
        ),
        Metric(
            "modes2d",
            {"reverse_kl": MINIMIZE, "modes_captured": MAXIMIZE, "high_quality": MAXIMIZE},
            POINTS2D,
            _modes2d,
            mode_count="modes_captured",
        ),
    )
}
NAMES = tuple(REGISTRY)


def _directions() -> dict[str, str]:
    out: dict[str, str] = {}
    for metric in REGISTRY.values():
        for key, direction in metric.keys.items():
            # Two metrics may log one key (reverse KL); it must mean the same thing in both.
            assert out.setdefault(key, direction) == direction, key
    return out


DIRECTIONS = _directions()


def direction(key: str) -> str | None:
    """MINIMIZE or MAXIMIZE for a logged metric (`val/fid` or `fid`); None when no entry logs it."""
    return DIRECTIONS.get(key.rsplit("/", 1)[-1])


def names_for(need: str) -> list[str]:
    return [m.name for m in REGISTRY.values() if m.needs == need]


def primary_key(names: Sequence[str]) -> str:
    """The key that ranks a run scored by `names` (the first entry's primary), as `val/<key>`."""
    return f"val/{REGISTRY[names[0]].primary}"


def default_keys() -> list[str]:
    """Each entry's primary key, in the table's order: what `ganforge-report` ranks by when told
    nothing else (the first of these that the runs logged). The 2-D mixtures' primary is reverse
    KL, which weighs coverage and balance together; Stacked MNIST's is the mode count its papers
    lead with (its entry comes first, so a run's `val/modes` outranks its `val/reverse_kl`)."""
    return [f"val/{m.primary}" for m in REGISTRY.values()]


def mode_count_keys() -> list[str]:
    """`val/<key>` of every key that counts captured modes."""
    return [f"val/{m.mode_count}" for m in REGISTRY.values() if m.mode_count]
