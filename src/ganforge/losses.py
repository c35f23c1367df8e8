"""GAN objectives as pure functions of discriminator logits, and the record of each loss.

Every function takes raw D outputs (logits, or critic values for the Wasserstein loss) and returns
a scalar to *minimise*. Probabilities never appear: log D(x) = logsigmoid(x) = -softplus(-x) and
log(1 - D(x)) = -softplus(x) keep the losses finite for any logit.

`GANLoss` is one loss: its D and G functions and every fact the rest of ganforge asks about it
(how D's output reads, whether G needs D(x), whether G's gradient saturates, where D's decision
threshold is). ganforge's own losses are records here, chosen by name (`GANLoss("hinge")`); any
other loss is its functions and facts, which a loss yaml wires with Hydra:
`discriminator: {_target_: mypkg.losses.my_d, _partial_: true}` (see the README's Development
section).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ganforge.errors import ConfigError, check_bool

DLoss = Callable[[Tensor, Tensor], Tensor]
GLoss = Callable[..., Tensor]


@dataclass(frozen=True, repr=False)
class GANLoss:
    """The adversarial objective named `name` (one of `LOSS_NAMES`), or, when `discriminator` and
    `generator` are given, that loss under the label `name`, with the facts stated beside it.

    Args:
        discriminator: `d(real_logits, fake_logits) -> scalar` to minimise.
        generator: `g(fake_logits, real_logits=None) -> scalar` to minimise.
        probabilistic: D's output is the logit of a probability (logged through a sigmoid);
            false: a raw score, logged as it is.
        generator_needs_real: `generator` reads D(x); only then is the extra forward pass made.
        saturating: G's gradient vanishes as D(G(z)) -> 0 (the health monitor's
            `vanishing_g_gradient` watches for it).
        threshold: D's decision boundary on its raw output ("real" above, "fake" below), as the
            health monitor measures D's accuracy; null: none is absolute (a critic), the scores
            are split at the midpoint of the real and fake means.

    For one of ganforge's names the facts are its own; stating one that differs is an error.
    """

    name: str
    discriminator: DLoss | None = None
    generator: GLoss | None = None
    # None: not stated (the known loss's fact, or the default of a loss of the user's own).
    probabilistic: bool | None = None
    generator_needs_real: bool | None = None
    saturating: bool | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.discriminator is None and self.generator is None:
            self._take_facts_of(self.name)
            return
        for key in ("discriminator", "generator"):
            fn = getattr(self, key)
            if not callable(fn):
                raise ConfigError(
                    f"loss.{key}={fn!r} must be a function (in the loss yaml: "
                    f"{{_target_: mypkg.losses.my_{key[0]}, _partial_: true}})"
                )
        for key in _FLAGS:
            value = getattr(self, key)
            object.__setattr__(self, key, False if value is None else value)
            check_bool(f"loss.{key}", getattr(self, key))
        t = self.threshold
        if t is not None and not (
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
        ):
            raise ConfigError(
                f"loss.threshold={t!r} must be a number (D's decision boundary, e.g. 0 for a "
                "logit) or null for a critic without one"
            )
        if t is not None:
            object.__setattr__(self, "threshold", float(t))

    def _take_facts_of(self, name: str) -> None:
        if name not in _LOSSES:
            raise ConfigError(
                f"loss.name={name!r} is not a known GAN loss; choose one of "
                f"{list(LOSS_NAMES)} (e.g. loss=hinge on the command line), or give "
                "loss.discriminator and loss.generator functions"
            )
        known = _LOSSES[name]
        for f in fields(self):
            stated, fact = getattr(self, f.name), getattr(known, f.name)
            if stated is not None and stated != fact:
                raise ConfigError(
                    f"loss.{f.name}={stated!r}, but ganforge's loss {name!r} has "
                    f"{f.name}={fact!r}; drop loss.{f.name}, or give loss.discriminator and "
                    "loss.generator for a loss of your own"
                )
            object.__setattr__(self, f.name, fact)

    def d_output(self, logits: Tensor) -> Tensor:
        """Mean D output as logged: a probability for logit losses, the raw critic value else."""
        logits = logits.detach().float()
        return (torch.sigmoid(logits) if self.probabilistic else logits).mean()

    def d_outputs_logged(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """D's mean outputs on reals and fakes under their metric names: probabilities
        (`train/d_real`, `train/d_fake`) where the record says D outputs one, raw scores under
        their own names (`train/d_real_score`, ...) otherwise (README, metrics)."""
        suffix = "" if self.probabilistic else "_score"
        return {
            f"train/d_real{suffix}": self.d_output(real_logits),
            f"train/d_fake{suffix}": self.d_output(fake_logits),
        }

    def __repr__(self) -> str:
        return f"GANLoss({self.name!r})"


_FLAGS = ("probabilistic", "generator_needs_real", "saturating")


# --- minimax (Goodfellow et al. 2014) -------------------------------------------------------------
def minimax_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # D maximises E[log D(x)] + E[log(1 - D(G(z)))]; as a loss: softplus(-r) + softplus(f).
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def minimax_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    # The saturating form: G minimises E[log(1 - D(G(z)))] = E[-softplus(f)]. Its gradient
    # d/df = -sigmoid(f) vanishes as D(G(z)) -> 0, which is why the non-saturating form exists.
    return -F.softplus(fake_logits).mean()


# --- non-saturating (Goodfellow et al. 2014, section 3) -------------------------------------------
def non_saturating_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    # G maximises E[log D(G(z))], i.e. minimises softplus(-f);
    # its gradient -sigmoid(-f) -> -1 as f -> -inf: strong exactly where minimax's vanishes.
    return F.softplus(-fake_logits).mean()


# --- least squares (Mao et al. 2017, a=0, b=1, c=1) -----------------------------------------------
def lsgan_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())


def lsgan_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    return 0.5 * (fake_logits - 1).pow(2).mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) ----------------------------------------------------
def hinge_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    return -fake_logits.mean()


# --- Wasserstein critic (Arjovsky et al. 2017; with a gradient penalty, Gulrajani et al. 2017) ----
def wasserstein_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # The critic maximises E[D(x)] - E[D(G(z))].
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    return -fake_logits.mean()


# --- relativistic average (Jolicoeur-Martineau 2019, RaSGAN) --------------------------------------
def relativistic_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # D judges whether real data is more realistic than the average fake, and vice versa.
    return (
        F.softplus(-(real_logits - fake_logits.mean())).mean()
        + F.softplus(fake_logits - real_logits.mean()).mean()
    )


def relativistic_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    # Symmetric to D: G wants fakes judged more real than the average real, and reals less so.
    real_logits = _needs_real(real_logits, "relativistic")
    return (
        F.softplus(-(fake_logits - real_logits.mean())).mean()
        + F.softplus(real_logits - fake_logits.mean()).mean()
    )


# --- relativistic pairing (Jolicoeur-Martineau 2019, RpGAN; Huang et al. 2024, R3GAN) -------------
# Each real is paired with one fake, not with the batch mean as in RaGAN above. R3GAN's code:
# github brownvc/R3GAN, R3GAN/Trainer.py lines 38-39 (D) and 21-22 (G).
def rpgan_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # D minimises E_i[softplus(-(D(x_i) - D(G(z_i))))]: each real judged more real than its fake.
    return F.softplus(-(real_logits - fake_logits)).mean()


def rpgan_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    # G minimises E_i[softplus(-(D(G(z_i)) - D(x_i)))]: the same pairs with the roles swapped.
    real_logits = _needs_real(real_logits, "rpgan")
    return F.softplus(-(fake_logits - real_logits)).mean()


def _needs_real(real_logits: Tensor | None, name: str) -> Tensor:
    if real_logits is None:
        raise ValueError(f"the {name} generator loss needs the real logits")
    return real_logits


# ganforge's own losses: each record holds every fact about it. Logit losses (and hinge) put D's
# boundary at 0, least squares at 0.5 (targets 0 and 1); a Wasserstein critic has none.
_LOSSES: dict[str, GANLoss] = {
    loss.name: loss
    for loss in (
        GANLoss("minimax", minimax_d, minimax_g, probabilistic=True, saturating=True, threshold=0),
        GANLoss("non_saturating", minimax_d, non_saturating_g, probabilistic=True, threshold=0.0),
        GANLoss("lsgan", lsgan_d, lsgan_g, threshold=0.5),
        GANLoss("hinge", hinge_d, hinge_g, threshold=0.0),
        GANLoss("wasserstein", wasserstein_d, wasserstein_g, threshold=None),
        GANLoss(
            "relativistic",
            relativistic_d,
            relativistic_g,
            probabilistic=True,
            generator_needs_real=True,
            threshold=0.0,
        ),
        # Only D(x) - D(G(z)) enters the loss, so D's output is a score with no absolute zero (any
        # constant shift is free): no probability, and split at the midpoint like a critic's.
        GANLoss("rpgan", rpgan_d, rpgan_g, generator_needs_real=True, threshold=None),
    )
}
LOSS_NAMES = tuple(_LOSSES)
