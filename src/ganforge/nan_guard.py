"""What a run does when a loss becomes NaN or inf (`system.nan_policy`).

`stop` (the default) raises before the update, so the weights never take a NaN step (they may
have diverged to huge finite values before: train.py says what the checkpoints hold). `skip` drops
the rest of that iteration and goes on, until `system.max_skips` skips in all or
`system.max_consecutive_skips` in a row — weights that have diverged give a NaN at every retry,
and the run would otherwise retry the same iteration forever — then stops the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ganforge.errors import ConfigError, NonFiniteLossError, check_int

NAN_POLICIES = ("stop", "skip")
# What to try after a non-finite loss or non-finite weights (also the message of
# callbacks/checkpoint.py's refusal to save them; train.py adds what the checkpoints hold).
NAN_REMEDIES = (
    "Lower optim.lr_d/optim.lr_g, add a penalty (loss=wgan_gp or system.r1_gamma), or set "
    "system.grad_clip_d/grad_clip_g"
)


class NanGuard:
    """Decides, update by update, whether a loss may be applied; counts the skipped ones."""

    def __init__(
        self, policy: str = "stop", max_skips: int = 100, max_consecutive_skips: int = 10
    ) -> None:
        if policy not in NAN_POLICIES:
            raise ConfigError(f"system.nan_policy={policy!r} must be 'stop' or 'skip'")
        check_int("system.max_skips", max_skips)
        check_int("system.max_consecutive_skips", max_consecutive_skips)
        self.policy, self.max_skips = policy, max_skips
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0  # iterations dropped for a non-finite loss
        self.consecutive = 0  # skips since the last completed iteration

    def allows(
        self,
        loss: Tensor,
        name: str,
        iteration: int,
        all_ranks: Callable[[bool], bool] = bool,
    ) -> bool:
        """Whether to apply the update of `loss` (train/`name`) in GAN iteration `iteration`
        (1-based); False means skip the rest of the iteration, else NonFiniteLossError.
        `all_ranks` turns this rank's verdict into every rank's (under DDP all ranks must take
        the same branch, or the others would wait in the all-reduce)."""
        finite = all_ranks(bool(torch.isfinite(loss.detach()).all()))  # one host sync per update
        if finite:
            return True
        value = float(loss.detach())
        if self.policy == "stop":
            raise NonFiniteLossError(
                f"train/{name} became {value} in iteration {iteration}; stopped before that "
                f"update. {NAN_REMEDIES}, or set system.nan_policy=skip to drop such updates "
                "and go on"
            )
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive_skips:
            bound = (
                f"{self.consecutive} attempts in a row at iteration {iteration} "
                f"(system.max_consecutive_skips={self.max_consecutive_skips})"
            )
        elif self.skipped >= self.max_skips:
            bound = f"{self.skipped} times in all (system.max_skips={self.max_skips})"
        else:
            return False
        raise NonFiniteLossError(
            f"train/{name} became {value} {bound}, so the run stopped instead of skipping on: "
            f"the training has diverged. {NAN_REMEDIES}"
        )

    def completed(self) -> None:
        """An iteration went through: the run of consecutive skips is over."""
        self.consecutive = 0
