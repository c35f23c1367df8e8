"""Kernel Inception Distance (Bińkowski et al. 2018) on Inception features, via torchmetrics."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance


def kid_subset_for(requested: int, n_fake: int, n_real: int) -> int:
    """KID's subset size: ``requested``, but at most half of the smaller set (and at least 2,
    the unbiased MMD estimator's minimum).

    KID is the mean of unbiased MMD² estimates over random subsets, its spread their standard
    deviation (Bińkowski et al. 2018; their ``polynomial_mmd_averages`` draws each subset without
    replacement). A subset as large as the set is the set itself: every estimate is then the
    same and the "std" is rounding noise (~1e-7). At half the set two subsets share half their
    points on average, so the estimates vary as the sample does. Drawing with replacement
    instead (a bootstrap) would put duplicate points into the estimator's off-diagonal kernel
    sums and bias KID upwards. Unchanged when both sets hold at least twice ``requested``.
    """
    return max(2, min(requested, n_fake // 2, n_real // 2))


class _Precomputed(nn.Module):
    """Identity "feature extractor": torchmetrics' KID on features we already have."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def kid(
    fake_features: Tensor, real_features: Tensor, subsets: int, subset_size: int, seed: int
) -> tuple[float, float | None]:
    """(mean, std) of torchmetrics' KID over ``subsets`` random subsets of ``subset_size``; the
    std is None when it would measure nothing (one subset, or every subset the whole set)."""
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
    whole = subset_size >= max(len(fake_features), len(real_features))
    return float(mean), None if subsets < 2 or whole else float(std)
