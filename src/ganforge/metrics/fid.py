"""The Fréchet Inception Distance, as pure float64 functions of features.

The metric registry (``metrics.registry``) applies ``frechet_distance`` to the cached reference
mean and covariance and the generated samples' ``gaussian_stats``. ``FID`` wraps the same distance
in torchmetrics' ``FrechetInceptionDistance`` (its states, update and DDP reduction) for code that
wants a ``Metric``; ganforge's evaluation never uses it, tests/test_inception.py checks the
Inception network through it against torchmetrics' own.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance


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


class FID(FrechetInceptionDistance):
    """torchmetrics' FrechetInceptionDistance, whose ``compute`` uses ``frechet_distance``.

    Same states (``real_features_sum``, ``real_features_cov_sum``, ``real_features_num_samples``,
    and ``fake_*``, float64), same ``update`` and ``feature=`` handling, same value (tests check
    1e-6 agreement). Why override: torchmetrics takes ``eigvals`` of the non-symmetric product
    S_real S_fake, which on a CPU takes 20-90 s for 2048-d covariances from a few hundred samples
    (rank-deficient: slow to converge) and is noisier; the symmetric route takes seconds.
    """

    def compute(self) -> Tensor:
        stats = []
        for prefix in ("real", "fake"):
            n = getattr(self, f"{prefix}_features_num_samples")
            if n < 2:
                raise RuntimeError("FID needs at least 2 real and 2 fake samples")
            mean = getattr(self, f"{prefix}_features_sum") / n
            cov_sum = getattr(self, f"{prefix}_features_cov_sum")
            stats += [mean, (cov_sum - n * torch.outer(mean, mean)) / (n - 1)]
        return torch.tensor(frechet_distance(*stats), dtype=torch.float64)
