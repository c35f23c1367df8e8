"""The GAN system's training settings: one typed record of plain values, checked once, here.

This record is the one owner of each setting's name, default and meaning. The config's `system`
node is its fields at their defaults (registered below as `system_settings`, which
`conf/system/default.yaml` pulls in; that file sets only what is read from other groups), so
`ganforge-train system.n_critic=2` works for every field and `ganforge-train --cfg job` lists
them all. `GANSystem(G, D, loss, g_optimizer, d_optimizer, meta, **settings)` takes them as
keywords, so a notebook or a test writes `GANSystem(..., n_critic=5, ema_decay=None)`. Each error
names the config key the user types: `train.max_iters` and `optim.decay` are read from other
groups. Whether the model is class-conditional, and on how many classes, is the networks' own
fact (G's `n_classes`, D's `conditional`; `models.protocols`), as D's `pack` is. The NaN
policy's three settings are checked by `NanGuard`, which they configure.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hydra.core.config_store import ConfigStore

from ganforge.compile import check_backend, check_dynamic, check_mode
from ganforge.errors import ConfigError, check_int, is_number
from ganforge.health.settings import HealthSettings
from ganforge.regularizers import PENALTIES
from ganforge.schedules import check_schedules


@dataclass(frozen=True)
class Settings:
    # --- The game
    n_critic: int = 1  # D updates (each on a fresh real batch) per GAN iteration
    # G updates (each on fresh z) per GAN iteration, after D's (VEEGAN's and PacGAN's Stacked-
    # MNIST code: 2); an iteration is still one count of train.max_iters and of every interval.
    g_steps: int = 1
    gp_weight: float = 0.0  # gradient penalty weight (WGAN-GP's lambda); works with any loss
    r1_gamma: float = 0.0  # R1 penalty weight on real data (Mescheder et al. 2018); any loss
    r1_interval: int = 1  # lazy R1: apply every k iterations (scaled by k)
    # R2 (R3GAN, Huang et al. 2024): the same zero-centred penalty on fakes; R3GAN's D loss adds
    # (gamma/2) * (R1 + R2), i.e. r1_gamma = r2_gamma = gamma, applied every step. Lazy (k > 1)
    # is cheaper, but R3GAN's local-convergence guarantee holds only for every-step penalties.
    r2_gamma: float = 0.0
    r2_interval: int = 1  # lazy R2: apply every k iterations (scaled by k)
    # ACGAN (model.conditional=acgan): weight of the auxiliary classification loss
    aux_weight: float = 1.0
    # DiffAugment (Zhao et al. 2020): None or a subset of "color,translation,cutout"; on the
    # command line quote the commas for Hydra: "system.diffaugment='color,translation,cutout'"
    diffaugment: str | None = None
    # --- The generator's running average
    # The EMA generator, used for samples and evaluation; None disables it.
    ema_decay: float | None = 0.999
    ema_start: int = 0  # G updates before averaging starts
    # The EMA as R3GAN and StyleGAN2 average: a half-life in images (R3GAN CIFAR-10: 5000000),
    # ramped from 0 by the cosine schedule over optim.decay_iters/decay_images
    # (ganforge.schedules); the average keeps 0.5 ** (images per iteration / half-life) of
    # itself. Replaces ema_decay's rule (which must stay non-null: it switches the EMA on).
    # Logged as train/ema_beta.
    ema_half_life: float | None = None
    # --- The updates
    grad_clip_g: float | None = None  # max gradient norm per network; None: no clipping
    grad_clip_d: float | None = None
    lr_decay: str = "none"  # none | linear (to 0 at max_iters) | cosine (optim.decay)
    decay_start: int = 0  # iteration where the linear decay starts (optim.decay_start)
    # --- The cosine schedules (ganforge.schedules): their end values and their one span
    decay_to: float = 0.0  # cosine: the lrs end at this fraction of lr_g/lr_d (optim.decay_to)
    beta2_to: float | None = None  # Adam's beta2 at the span's end (optim.beta2_to)
    # D's penalty weights (r1_gamma, r2_gamma, gp_weight) fall by the cosine schedule to this
    # fraction of theirs (R3GAN: 0.1, gamma -> gamma/10); None: constant. Logged as
    # train/r1_gamma, ...
    penalty_to: float | None = None
    decay_iters: int | None = None  # the span in iterations (optim.decay_iters)
    decay_images: float | None = None  # or in images (optim.decay_images); else max_iters
    # Images per device in one D update (data.batch_size): converts optim.decay_images and the
    # half-life.
    batch_size: int | None = None
    # --- The run
    max_iters: int | None = None  # run length in GAN iterations (train.max_iters)
    log_every: int = 10  # iterations between logged train/* metrics (train.log_every)
    log_grad_norm: bool = False  # log train/*_grad_norm without clipping
    # torch.compile G and D in place (README, "Slow on a CPU"): False, True or a mode (default,
    # reduce-overhead, max-autotune); a compiled run's checkpoint is an eager run's.
    compile: bool | str = False
    # None: a batch dimension seen at two sizes becomes dynamic; True/False force it.
    compile_dynamic: bool | None = None
    # Size of the fixed noise batch behind every sample grid (conditional: rounded up to whole
    # rows, one row per class).
    n_fixed: int = 64
    seed: int = 0  # seeds the grid noise and the training noise stream (the config's seed)
    # --- A NaN/inf loss (checked by ganforge.nan_guard.NanGuard): stop (error naming the
    # iteration and what the checkpoints hold; no NaN step is ever taken) or skip (drop that
    # iteration's remaining updates, count train/skipped_updates, go on) — until max_skips skips
    # in all or max_consecutive_skips in a row, then stop as well (weights that have diverged
    # give a NaN at every retry).
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
        check_schedules(self)
        check_dynamic(self.compile_dynamic)
        check_backend(check_mode(self.compile))  # inductor's compiler, before any work


def field_defaults(record: type) -> dict[str, Any]:
    """A settings record's fields at their defaults: the config node Hydra composes from it."""
    return {f.name: f.default for f in fields(record)}


# The config nodes that are records' defaults: `system` (conf/system/default.yaml pulls in
# system_settings) and `callbacks.health` (conf/callbacks/default.yaml, health_settings).
# Registered on import, which every command and test that composes the config does (ganforge.train
# imports the system, the system these settings): each node stays its dataclass's, never a copy.
ConfigStore.instance().store(name="system_settings", node=field_defaults(Settings))
ConfigStore.instance().store(name="health_settings", node=field_defaults(HealthSettings))
