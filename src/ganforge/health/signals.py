"""The training-health signals: numbers a GAN step already has, plus one rate-limited probe.

Everything here is a pure function of tensors or a context manager, so it can be tested without a
Trainer. The callback (`ganforge.callbacks.health`) decides when to call them.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from ganforge.losses import GANLoss


def grad_norm(params: Iterable[nn.Parameter]) -> float:
    """The total L2 norm of the parameters' gradients (0 when none has one)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.nn.utils.get_total_norm(grads))


def snapshot(params: Iterable[nn.Parameter]) -> list[Tensor]:
    """Copies of the weights, to measure the update a step is about to make."""
    return [p.detach().clone() for p in params]


def update_ratio(before: list[Tensor], params: Iterable[nn.Parameter]) -> float:
    """||W_after - W_before|| / ||W_before|| over all weights: the relative size of one step.

    ~1e-3 is a healthy Adam step; ~0 means the network does not move; ~1 means each step
    rewrites the weights."""
    after = [p.detach() for p in params]
    deltas = [(a - b).norm() for a, b in zip(after, before, strict=True)]
    delta = torch.linalg.vector_norm(torch.stack(deltas))
    scale = torch.linalg.vector_norm(torch.stack([b.norm() for b in before]))
    return float(delta / scale.clamp_min(1e-12))


def mean_pairwise_distance(x: Tensor) -> float:
    """The mean L2 distance between distinct samples of a batch (flattened), in float64 so a
    collapsed batch reads as ~0, not as rounding noise."""
    flat = x.detach().flatten(1).double()
    if flat.shape[0] < 2:
        return 0.0
    return float(torch.pdist(flat).mean())


def d_accuracy(real_logits: Tensor, fake_logits: Tensor, loss: GANLoss) -> tuple[float, float]:
    """The fraction of real samples D scores as real, and of fakes it scores as fake, split at
    the loss's decision threshold."""
    real, fake = real_logits.detach().float().flatten(), fake_logits.detach().float().flatten()
    threshold = loss.threshold
    if threshold is None:  # a critic: split at the midpoint of its two means
        threshold = float(real.mean() + fake.mean()) / 2
    return float((real > threshold).float().mean()), float((fake < threshold).float().mean())


@contextlib.contextmanager
def side_effect_free(*modules: nn.Module) -> Iterator[None]:
    """Run forward passes that leave training exactly as it was: no autograd graph, the global
    RNGs (dropout, DiffAugment) forked, and every buffer (BatchNorm running statistics, spectral
    norm's power-iteration vectors) restored afterwards. A run with the health monitor is then
    the same run as one without it."""
    buffers = [b for m in modules for b in m.buffers()]
    saved = [b.detach().clone() for b in buffers]
    tensors = itertools.chain(buffers, (p for m in modules for p in m.parameters()))
    devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved, strict=True):
                b.copy_(s)
