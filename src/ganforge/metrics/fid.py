"""The Fréchet Inception Distance, as pure float64 functions of features.

The metric registry (``metrics.registry``) applies ``frechet_distance`` to the cached reference
mean and covariance and the generated samples' ``gaussian_stats``. (The tests wrap the same
distance in torchmetrics' ``FrechetInceptionDistance``: ``FID`` in tests/fakes.py.)
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor


def to_f64(x: ArrayLike | Tensor) -> Tensor:
    return (
        torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(torch.float64).cpu()
    )


def gaussian_stats(features: ArrayLike | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (n - 1, as torchmetrics) of (N, D) features, in float64."""
    f = to_f64(features)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got {tuple(f.shape)}")
    return f.mean(0), torch.cov(f.T)


def _psd_sqrt(evals: Tensor) -> Tensor:
    """sqrt of a PSD matrix's eigenvalues. Those below eigh's rounding error (~ D·eps·λ_max) are
    zero: a rank-deficient covariance (N < D) has many, and sqrt would turn their ±1e-16 noise
    into a ~1e-8 bias each, enough to push the FID of a set with itself below zero."""
    tol = evals.abs().max() * evals.shape[0] * torch.finfo(evals.dtype).eps
    return torch.where(evals > tol, evals, torch.zeros_like(evals)).sqrt()


def frechet_distance(
    mu1: ArrayLike | Tensor,
    sigma1: ArrayLike | Tensor,
    mu2: ArrayLike | Tensor,
    sigma2: ArrayLike | Tensor,
) -> float:
    """d² = ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½), in float64.

    Tr (S1 S2)^½ = Tr (S1^½ S2 S1^½)^½: the right side is the square root of a symmetric PSD
    matrix, whose eigenvalues eigvalsh finds stably (clamping rounding noise below 0). torchmetrics
    takes eigvals of the non-symmetric S1 S2 instead: the same value in exact arithmetic, but
    noisier when covariances are rank-deficient (fewer samples than 2048 dimensions).
    """
    m1, m2, s1, s2 = to_f64(mu1), to_f64(mu2), to_f64(sigma1), to_f64(sigma2)
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes {m1.shape} {s1.shape} {m2.shape} {s2.shape} are not (D,), (D, D)")
    evals, evecs = torch.linalg.eigh((s1 + s1.T) / 2)
    s1_half = (evecs * _psd_sqrt(evals)) @ evecs.T
    inner = s1_half @ s2 @ s1_half
    tr_covmean = _psd_sqrt(torch.linalg.eigvalsh((inner + inner.T) / 2)).sum()
    diff = m1 - m2
    return float(diff.dot(diff) + s1.trace() + s2.trace() - 2 * tr_covmean)
