"""The GAN system's training settings: one typed record of plain values, checked once, here.

`conf/system/default.yaml` sets them (comments there say what each does); `GANSystem(G, D, loss,
g_optimizer, d_optimizer, meta, **settings)` takes them as keywords, so a notebook or a test
writes `GANSystem(..., n_critic=5, ema_decay=None)`. Each error names the config key the user
types: `train.max_iters`, `optim.decay` and `model.conditional` are read from other groups.
The NaN policy's three settings are checked by `NanGuard`, which they configure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.compile import check_backend, check_dynamic, check_mode
from ganforge.errors import ConfigError, check_int, is_number
from ganforge.models.layers import check_conditional
from ganforge.regularizers import PENALTIES
from ganforge.schedules import check_schedules


@dataclass(frozen=True)
class Settings:
    # The game
    n_critic: int = 1  # D updates (each on a fresh real batch) per GAN iteration
    g_steps: int = 1  # G updates (each on fresh z) per GAN iteration, after the D updates
    gp_weight: float = 0.0  # gradient penalty weight (WGAN-GP's lambda)
    r1_gamma: float = 0.0  # R1 penalty weight (Mescheder et al. 2018)
    r1_interval: int = 1  # lazy R1: every k iterations, scaled by k
    r2_gamma: float = 0.0  # R2 penalty weight, on fakes (R3GAN: (gamma/2) * (R1 + R2))
    r2_interval: int = 1  # lazy R2: every k iterations, scaled by k
    aux_weight: float = 1.0  # ACGAN: weight of the auxiliary classification loss
    diffaugment: str | None = None  # DiffAugment policy, e.g. "color,translation"
    conditional: str = "none"  # none | projection | acgan (model.conditional)
    n_classes: int | None = None  # the data's classes; None when unconditional
    # The generator's running average
    ema_decay: float | None = 0.999  # None: no EMA generator
    ema_start: int = 0  # G updates before averaging starts
    ema_half_life: float | None = None  # in images, ramped from 0; replaces ema_decay's rule
    # The updates
    grad_clip_g: float | None = None  # max gradient norm; None: no clipping
    grad_clip_d: float | None = None
    lr_decay: str = "none"  # none | linear (to 0 at max_iters) | cosine (optim.decay)
    decay_start: int = 0  # iteration where the linear decay starts (optim.decay_start)
    # The cosine schedules (ganforge.schedules): their end values and their one span
    decay_to: float = 0.0  # cosine: the lrs end at this fraction of lr_g/lr_d (optim.decay_to)
    beta2_to: float | None = None  # Adam's beta2 at the span's end (optim.beta2_to)
    penalty_to: float | None = None  # D's penalty weights end at this fraction of theirs
    decay_iters: int | None = None  # the span in iterations (optim.decay_iters)
    decay_images: float | None = None  # or in images (optim.decay_images); else max_iters
    batch_size: int | None = None  # images per device in one D update (data.batch_size)
    # The run
    max_iters: int | None = None  # run length in GAN iterations (train.max_iters)
    log_every: int = 10  # iterations between logged train/* metrics (train.log_every)
    log_grad_norm: bool = False  # log train/*_grad_norm without clipping
    compile: bool | str = False  # torch.compile G and D: true or a mode (ganforge.compile)
    compile_dynamic: bool | None = None  # None: torch's automatic dynamic shapes
    n_fixed: int = 64  # samples in the fixed grid noise
    seed: int = 0  # seeds the grid noise and the training noise stream
    # A NaN/inf loss (checked by ganforge.nan_guard.NanGuard)
    nan_policy: str = "stop"  # stop | skip
    max_skips: int = 100
    max_consecutive_skips: int = 10

    def __post_init__(self) -> None:
        counts = {"system.n_critic": self.n_critic, "system.g_steps": self.g_steps}
        counts |= {"system.n_fixed": self.n_fixed}
        counts["train.log_every"] = self.log_every
        # D's penalties: their weights and lazy intervals are named by their table entries.
        counts |= {
            f"system.{p.interval}": getattr(self, p.interval) for p in PENALTIES if p.interval
        }
        for key, value in counts.items():
            check_int(key, value)
        weights = {f"system.{p.weight}": getattr(self, p.weight) for p in PENALTIES}
        for key, value in (weights | {"system.aux_weight": self.aux_weight}).items():
            if not (is_number(value) and value >= 0):
                raise ConfigError(
                    f"{key}={value!r} must be a number >= 0 (0 switches the term off), e.g. {key}=1"
                )
        if self.max_iters is not None:
            check_int("train.max_iters", self.max_iters)
        for net, clip in (("g", self.grad_clip_g), ("d", self.grad_clip_d)):
            if clip is not None and not (is_number(clip) and clip > 0):
                raise ConfigError(
                    f"system.grad_clip_{net}={clip!r} must be a number > 0 or null; it is a "
                    f"maximum gradient norm, e.g. system.grad_clip_{net}=10, or null for no "
                    "clipping"
                )
        decay = self.ema_decay
        if decay is not None and not 0.0 < decay < 1.0:
            raise ConfigError(f"system.ema_decay={decay} must be in (0, 1), or null to disable")
        # The class count is kept only for a conditional model (None otherwise).
        object.__setattr__(self, "n_classes", check_conditional(self.conditional, self.n_classes))
        check_schedules(self)
        check_dynamic(self.compile_dynamic)
        check_backend(check_mode(self.compile))  # inductor's compiler, before any work
