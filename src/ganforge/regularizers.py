"""Discriminator regularizers: pure functions of D and a batch, each a scalar added to D's loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _input_grad_sq_norm(D: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Per-sample squared norm of dD(x)/dx, kept in the graph so the penalty can be minimised."""
    x = x.detach().requires_grad_(True)
    out = D(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1)


def gradient_penalty(
    D: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on random interpolates.

    Unweighted; the caller multiplies by lambda. Summing D's outputs gives per-sample gradients
    because each output depends only on its own input (true unless D mixes samples, e.g. BatchNorm;
    the WGAN-GP paper drops BatchNorm from the critic for exactly this reason).
    """
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    # +1e-12 keeps the sqrt differentiable where the gradient is exactly zero.
    norm = (_input_grad_sq_norm(D, x_hat) + 1e-12).sqrt()
    return (norm - 1).pow(2).mean()


def r1_penalty(D: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller applies gamma / 2."""
    return _input_grad_sq_norm(D, real).mean()
