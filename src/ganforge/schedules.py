"""What follows the GAN iteration: the learning rates, Adam's beta2, D's penalty weights and the
generator EMA's weight, each a pure function of the iteration counter.

The counter is stored in the checkpoint, so a resumed run takes every value its straight run
would have taken (the learning rates' LambdaLR and the optimizers' param groups are restored by
Lightning with the optimizer state, and agree with these functions at that iteration).

`optim.decay=linear` is the SNGAN / WGAN-GP rule (both lrs to 0 at train.max_iters).
`optim.decay=cosine` and the other cosine schedules are R3GAN's (Huang et al. 2024; github
brownvc/R3GAN, training/training_loop.py:29-38, `cosine_decay_with_warmup` without its warm-up
and hold): value(t) = start + (end - start) * (1 - cos(pi t / T)) / 2 for t <= T, `end` after,
where t counts images before this iteration's updates (L307-311, cur_nimg grows after them,
L358). One span T serves all of them, as one `decay_nimg` does in the authors' train.py:190-196.
Here t and T are counted in iterations: T = optim.decay_iters, or optim.decay_images / (images
per iteration), or train.max_iters. The EMA: the half-life in images is itself such a schedule,
ramped from 0 (train.py:192), and the average keeps ema_beta = 0.5 ** (images per iteration /
half-life) of itself at each update (training_loop.py:351; StyleGAN2-ADA's rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ganforge.errors import ConfigError, check_int, check_positive, is_number
from ganforge.regularizers import PENALTIES

if TYPE_CHECKING:
    from ganforge.settings import Settings

DECAYS = ("none", "linear", "cosine")


@dataclass(frozen=True)
class Cosine:
    """`start` at iteration 0, `end` at `span` iterations and beyond, a half cosine between."""

    start: float
    end: float
    span: float  # iterations; fractional when the span was stated in images

    def __call__(self, iteration: float) -> float:
        if iteration >= self.span:
            return self.end
        return (
            self.start
            + (self.end - self.start) * (1 - math.cos(math.pi * iteration / self.span)) / 2
        )


def linear_decay(start: int, end: int) -> Callable[[int], float]:
    """LR factor after `it` iterations: 1 until `start`, then linearly down to 0 at `end`."""

    def factor(it: int) -> float:
        return 1.0 - max(0, it - start) / (end - start)

    return factor


def ema_decay_at(decay: float, iteration: int, start: int) -> float:
    """EMA decay after G update `iteration`: 0 (a plain copy) up to `start`, then warmed up as
    min(decay, (1 + n) / (10 + n)) for n updates since start, so the average of a short run is not
    dominated by the random initial weights (0.999 ** 1000 still leaves them 37 % of the mix)."""
    if iteration <= start:
        return 0.0
    n = iteration - start
    return min(decay, (1 + n) / (10 + n))


@dataclass(frozen=True)
class Schedules:
    """The run's schedules, built once from the checked settings (`Schedules.of`)."""

    lr: Callable[[int], float] | None  # factor on both learning rates; None: constant
    beta2_to: float | None  # Adam's beta2 at the span's end; None: constant
    penalty: Cosine | None  # factor on every D penalty weight; None: constant
    ema_half_life: Cosine | None  # in images; None: system.ema_decay's warm-up rule
    span: float | None  # iterations of the cosine schedules
    images_per_iteration: int
    settings: Settings

    @classmethod
    def of(cls, s: Settings, world_size: int = 1) -> Schedules:
        per_iteration = (s.batch_size or 1) * world_size  # data.batch_size is per device
        span = _span(s, per_iteration)
        lr = None
        if s.lr_decay == "linear":
            lr = linear_decay(s.decay_start, s.max_iters)
        elif s.lr_decay == "cosine":
            lr = _plain(Cosine(1.0, s.decay_to, span))
        penalty = None if s.penalty_to is None else Cosine(1.0, s.penalty_to, span)
        ema = None if s.ema_half_life is None else Cosine(0.0, s.ema_half_life, span)
        return cls(lr, s.beta2_to, penalty, ema, span, per_iteration, s)

    def penalty_scale(self, iteration: int) -> float:
        """Factor on D's penalty weights in the updates of iteration `iteration` + 1."""
        return 1.0 if self.penalty is None else self.penalty(iteration)

    def ema_beta(self, iteration: int) -> float:
        """The share the average keeps of itself at the update after G update `iteration`."""
        s = self.settings
        if self.ema_half_life is None:
            return ema_decay_at(s.ema_decay, iteration, s.ema_start)
        half_life = self.ema_half_life(iteration - 1)  # images seen before this iteration
        return 0.5 ** (self.images_per_iteration / max(half_life, 1e-8))

    def set_beta2(self, optimizers: Sequence[torch.optim.Optimizer], iteration: int) -> None:
        """Adam's beta2 for the updates of iteration `iteration` + 1; the start is each group's
        beta2 as built, kept in the group (saved and restored with the optimizer state)."""
        if self.beta2_to is None:
            return
        for opt in optimizers:
            for group in opt.param_groups:
                if "betas" not in group:
                    raise ConfigError(
                        f"optim.beta2_to={self.beta2_to} schedules Adam's beta2, but "
                        f"{type(opt).__name__} has no betas; use optim=adam or optim.beta2_to=null"
                    )
                start = group.setdefault("initial_beta2", group["betas"][1])
                beta2 = Cosine(start, self.beta2_to, self.span)(iteration)
                group["betas"] = (group["betas"][0], beta2)

    def logged(
        self, iteration: int, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """The scheduled values G update `iteration` used (train/lr_g, train/lr_d, train/beta2,
        train/<penalty weight key>, train/ema_beta), only for what is scheduled."""
        values: dict[str, float] = {}
        done = iteration - 1  # iterations before this update
        opt_g, opt_d = optimizers
        if self.lr is not None:
            for name, opt in (("lr_g", opt_g), ("lr_d", opt_d)):
                group = opt.param_groups[0]
                values[f"train/{name}"] = group.get("initial_lr", group["lr"]) * self.lr(done)
        if self.beta2_to is not None:
            group = opt_g.param_groups[0]
            values["train/beta2"] = Cosine(group["initial_beta2"], self.beta2_to, self.span)(done)
        if self.penalty is not None:
            for p in PENALTIES:
                weight = getattr(self.settings, p.weight)
                if weight:
                    values[f"train/{p.weight}"] = weight * self.penalty(done)
        if self.ema_half_life is not None and self.settings.ema_decay is not None:
            values["train/ema_beta"] = self.ema_beta(iteration)
        return values


def _plain(schedule: Cosine) -> Callable[[int], float]:
    # A plain function: LambdaLR saves a callable object's fields in the checkpoint and restores
    # them over the config's, so a resumed run's lrs would follow the old span and the rest the new.
    def factor(iteration: int) -> float:
        return schedule(iteration)

    return factor


def _span(s: Settings, per_iteration: int) -> float | None:
    if s.decay_iters is not None:
        return float(s.decay_iters)
    if s.decay_images is not None:
        return s.decay_images / per_iteration
    return None if s.max_iters is None else float(s.max_iters)


def tied_to_run_length(s: Settings | Any) -> list[str]:
    """The keys whose schedule ends at train.max_iters (so a shorter run took other values), of
    Settings or of a composed config's `system` node (the same fields)."""
    keys = ["optim.decay=linear"] if s.lr_decay == "linear" else []
    if s.decay_iters is None and s.decay_images is None:
        keys += ["optim.decay=cosine"] * (s.lr_decay == "cosine")
        optional = {"optim.beta2_to": s.beta2_to, "system.penalty_to": s.penalty_to}
        optional["system.ema_half_life"] = s.ema_half_life
        keys += [key for key, value in optional.items() if value is not None]
    return keys


def check_schedules(s: Settings) -> None:
    """Settings' checks of the schedule keys: each bad value one ConfigError naming its key."""
    if s.lr_decay not in DECAYS:
        raise ConfigError(f"optim.decay={s.lr_decay!r} must be 'none', 'linear' or 'cosine'")
    if s.lr_decay == "linear":
        _check_linear(s)
    _fraction("optim.decay_to", s.decay_to, "the lrs end at this fraction of optim.lr_g/lr_d")
    if s.beta2_to is not None and not (is_number(s.beta2_to) and 0 <= s.beta2_to < 1):
        raise ConfigError(
            f"optim.beta2_to={s.beta2_to!r} must be in [0, 1) (Adam's beta2 at the end of the "
            "schedule; R3GAN: 0.99), or null for a constant beta2"
        )
    if s.penalty_to is not None:
        _fraction("system.penalty_to", s.penalty_to, "D's penalty weights end at this fraction")
    if s.ema_half_life is not None:
        check_positive("system.ema_half_life", s.ema_half_life)
        if s.ema_decay is None:
            raise ConfigError(
                f"system.ema_half_life={s.ema_half_life} sets the EMA generator's average, but "
                "system.ema_decay=null switches the EMA off; set system.ema_decay=0.999 (the "
                "half-life replaces its rule) or system.ema_half_life=null"
            )
    if s.decay_iters is not None and s.decay_images is not None:
        raise ConfigError(
            f"optim.decay_iters={s.decay_iters} and optim.decay_images={s.decay_images} both "
            "state the schedules' span; keep one and set the other to null"
        )
    if s.decay_iters is not None:
        check_int("optim.decay_iters", s.decay_iters)
    if s.decay_images is not None:
        check_positive("optim.decay_images", s.decay_images)
        if s.batch_size is None:
            raise ConfigError(
                f"optim.decay_images={s.decay_images} is counted in images, but the batch size "
                "(data.batch_size) is unknown; state the span as optim.decay_iters=N instead"
            )
    scheduled = {"optim.beta2_to": s.beta2_to, "system.penalty_to": s.penalty_to}
    scheduled["system.ema_half_life"] = s.ema_half_life
    used = [key for key, value in scheduled.items() if value is not None]
    used = ["optim.decay=cosine"] * (s.lr_decay == "cosine") + used
    if used and _span(s, 1) is None:
        raise ConfigError(
            f"{used[0]} follows a cosine schedule whose span is unstated: set "
            "optim.decay_iters=N or optim.decay_images=N, or train.max_iters=N"
        )


def _check_linear(s: Settings) -> None:
    if s.max_iters is None:
        raise ConfigError(
            "optim.decay=linear decays the learning rates to 0 at train.max_iters, which is "
            "null; set train.max_iters=N or optim.decay=none"
        )
    start = s.decay_start
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < s.max_iters:
        raise ConfigError(
            f"optim.decay_start={start} must be an integer in [0, train.max_iters={s.max_iters})"
        )


def _fraction(key: str, value: Any, meaning: str) -> None:
    if not (is_number(value) and 0 <= value <= 1):
        raise ConfigError(
            f"{key}={value!r} must be a number in [0, 1] ({meaning}: a decay, never a rise), "
            f"e.g. {key}=0.1"
        )
