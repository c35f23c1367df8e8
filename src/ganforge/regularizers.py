"""Discriminator regularizers: pure functions of D and a batch, each a scalar added to D's loss.

`D` is any callable from a batch to one output per pack: the GAN system passes D with the labels
and DiffAugment already bound, so the penalties constrain exactly the function D is trained as.
With PacGAN packing (`pack` = m > 1), one output depends on m consecutive samples: its input is
the whole pack, so gradient norms are taken over the pack and averaged over packs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _input_grad_sq_norm(D: Callable[[Tensor], Tensor], x: Tensor, pack: int = 1) -> Tensor:
    """Per-pack squared norm of dD(x)/dx, kept in the graph so the penalty can be minimised."""
    x = x.detach().requires_grad_(True)
    out = D(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.reshape(x.shape[0] // pack, -1).pow(2).sum(1)


def gradient_penalty(
    D: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    pack: int = 1,
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on random interpolates.

    Unweighted; the caller multiplies by lambda. Summing D's outputs gives per-sample gradients
    because each output depends only on its own input (true unless D mixes samples, e.g. BatchNorm;
    the WGAN-GP paper drops BatchNorm from the critic for exactly this reason). A packed D gets one
    interpolation weight per pack: x_hat lies on the segment between a real and a fake *pack*.
    """
    n_packs = real.shape[0] // pack
    eps_shape = (n_packs,) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    eps = eps.repeat_interleave(pack, dim=0)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    # +1e-12 keeps the sqrt differentiable where the gradient is exactly zero.
    norm = (_input_grad_sq_norm(D, x_hat, pack) + 1e-12).sqrt()
    return (norm - 1).pow(2).mean()


def r1_penalty(D: Callable[[Tensor], Tensor], real: Tensor, pack: int = 1) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller applies gamma / 2."""
    return _input_grad_sq_norm(D, real, pack).mean()
