"""Improved precision and recall (Kynkäänniemi et al. 2019) on feature sets.

Each set's manifold is the union of balls around its points, radius = distance to the point's k-th
nearest neighbour in the same set (k=3 in the paper). Precision = fraction of fake points inside
the real manifold; recall = fraction of real points inside the fake manifold. Distances are
computed in row chunks so memory stays O(chunk × N), never O(N²).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    # ||a||² + ||b||² - 2ab: one matmul; float64 keeps the cancellation error far below the radii.
    d = a.square().sum(1, keepdim=True) + b.square().sum(1)[None, :] - 2 * a @ b.T
    return d.clamp_min_(0)


def knn_radii(x: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """Squared distance from each row of x to its k-th nearest other row."""
    # Column 0 of the sorted distances is the point itself (0), so the k-th neighbour is k+1-th.
    return torch.cat(
        [_sq_dists(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(chunk_size)]
    )


def manifold_coverage(
    points: Tensor, centers: Tensor, sq_radii: Tensor, chunk_size: int = 1024
) -> Tensor:
    """Per point: is it inside some ball (center, radius)? Boundary counts (as in paper code)."""
    return torch.cat(
        [
            (_sq_dists(rows, centers) <= sq_radii[None, :]).any(dim=1)
            for rows in points.split(chunk_size)
        ]
    )


def precision_recall(
    real: Tensor,
    fake: Tensor,
    k: int = 3,
    chunk_size: int = 1024,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """(precision, recall) of fake features against real features, both (N, D)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"need (N, D) feature sets, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} points per set")
    real, fake = real.to(dtype), fake.to(dtype=dtype, device=real.device)
    real_r, fake_r = knn_radii(real, k, chunk_size), knn_radii(fake, k, chunk_size)
    precision = manifold_coverage(fake, real, real_r, chunk_size).double().mean().item()
    recall = manifold_coverage(real, fake, fake_r, chunk_size).double().mean().item()
    return precision, recall
