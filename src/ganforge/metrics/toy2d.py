"""Mode coverage on 2-D Gaussian mixtures (the VEEGAN / PacGAN protocol).

Each generated point is registered to its nearest mode. It is *high quality* when it lies within
3 standard deviations of that mode. A mode is *captured* when at least `min_count` high-quality
points are registered to it (PacGAN's protocol: 1), or, without a count, at least `min_share` of
its uniform share of samples (VEEGAN's: 20 of 2,500 samples on 25 modes, i.e. 0.2 of the uniform
100). Reverse KL compares the histogram of high-quality points over modes with the uniform
distribution the data has.
"""

from __future__ import annotations

import torch
from torch import Tensor

QUALITY_SIGMAS = 3  # a point within this many standard deviations of its mode is high quality
DEFAULT_SHARE = 0.2


def mode_stats(
    samples: Tensor,
    modes: Tensor,
    std: float,
    min_share: float = DEFAULT_SHARE,
    min_count: int | None = None,
) -> dict[str, float]:
    """Return `modes_captured`, `high_quality` (fraction in [0, 1]) and `reverse_kl` (nats).

    A mode is captured with `min_count` high-quality points when given, else with `min_share`
    of the uniform share n/k."""
    samples, modes = samples.detach().double().cpu(), modes.double().cpu()
    n, k = samples.shape[0], modes.shape[0]
    dist, nearest = torch.cdist(samples, modes).min(dim=1)
    good = dist <= QUALITY_SIGMAS * std
    counts = torch.bincount(nearest[good], minlength=k).double()
    threshold = min_share * n / k if min_count is None else min_count
    captured = int((counts >= threshold).sum())
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        reverse_kl = float((p[nz] * (p[nz] * k).log()).sum())
    else:
        reverse_kl = float("inf")  # no point near any mode: infinitely far from the data
    return {
        "modes_captured": float(captured),
        "high_quality": float(good.double().mean()),
        "reverse_kl": reverse_kl,
    }
