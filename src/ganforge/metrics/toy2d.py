"""Mode coverage on 2-D Gaussian mixtures (the VEEGAN / PacGAN protocol).

Each generated point is registered to its nearest mode. It is *high quality* when it lies within
3 standard deviations of that mode. A mode is *captured* when at least `min_share` of its uniform
share of samples are high-quality points registered to it (PacGAN: 20 of 2,500 samples on 25
modes, i.e. 0.2 of the uniform 100). Reverse KL compares the histogram of high-quality points over
modes with the uniform distribution the data has.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mode_stats(
    samples: Tensor, modes: Tensor, std: float, min_share: float = 0.2
) -> dict[str, float]:
    """Return `modes_captured`, `high_quality` (fraction in [0, 1]) and `reverse_kl` (nats)."""
    samples, modes = samples.detach().double().cpu(), modes.double().cpu()
    n, k = samples.shape[0], modes.shape[0]
    dist, nearest = torch.cdist(samples, modes).min(dim=1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=k).double()
    captured = int((counts >= min_share * n / k).sum())
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
