"""Inception Score (Salimans et al. 2016) on Inception logits, as torch-fidelity computes it."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ganforge.metrics.fid import to_f64


def inception_score(
    logits: ArrayLike | Tensor, splits: int = 10, seed: int = 2020
) -> tuple[float, float]:
    """Inception Score: exp E_x KL(p(y|x) || p(y)), mean and std over splits.

    Exactly torch-fidelity's protocol (``isc_features_to_metric``): logits without the fc bias,
    rows shuffled by ``np.random.RandomState(seed)``, float64, population std across splits.
    """
    x = to_f64(logits)
    n = x.shape[0]
    if x.dim() != 2 or n < splits:
        raise ValueError(f"need (N >= splits={splits}, classes) logits, got {tuple(x.shape)}")
    x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        p_y = p[rows].mean(dim=0, keepdim=True)
        kl = (p[rows] * (log_p[rows] - p_y.log())).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
