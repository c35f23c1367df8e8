"""G's and D's optimizers, built from their factories, and the learning-rate schedulers on them.

Training is manual optimization: the GAN system steps the schedulers by hand once per GAN
iteration (`step`), together with Adam's beta2 (`ganforge.schedules`); Lightning saves and
restores the schedulers' state with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ganforge.schedules import Schedules

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def build(
    G: nn.Module,
    D: nn.Module,
    g_optimizer: OptimizerFactory,
    d_optimizer: OptimizerFactory,
    schedules: Schedules,
) -> Any:
    """What `configure_optimizers` returns: [G's, D's] optimizer, with a LambdaLR on each when the
    learning rates follow a schedule."""
    opts = [g_optimizer(G.parameters()), d_optimizer(D.parameters())]
    if schedules.lr is None:
        return opts
    return opts, [LambdaLR(opt, schedules.lr) for opt in opts]


def step(
    schedules: Schedules,
    schedulers: Sequence[Any] | None,
    optimizers: Sequence[torch.optim.Optimizer],
    iteration: int,
) -> None:
    """The lrs and Adam's beta2 for the iteration after `iteration`."""
    for scheduler in schedulers or ():
        scheduler.step()
    schedules.set_beta2(optimizers, iteration)
