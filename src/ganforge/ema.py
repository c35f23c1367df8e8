"""The generator's running average (EMA): the copy the GAN system keeps beside G, and its update
once per GAN iteration at the decay `schedules.Schedules.ema_beta` gives for that iteration."""

from __future__ import annotations

import copy

import torch
from torch import nn


def averaged_copy(generator: nn.Module) -> nn.Module:
    """G's copy to average into: never trained, so it needs no gradients."""
    return copy.deepcopy(generator).requires_grad_(False)


@torch.no_grad()
def update(averaged: nn.Module, generator: nn.Module, decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * G, parameter by parameter."""
    torch._foreach_lerp_(list(averaged.parameters()), list(generator.parameters()), 1.0 - decay)
    # BatchNorm statistics are not averaged: the EMA generator uses G's current ones.
    for b_ema, b in zip(averaged.buffers(), generator.buffers(), strict=True):
        b_ema.copy_(b)
