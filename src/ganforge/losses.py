"""GAN objectives as pure functions of discriminator logits.

Every function takes raw D outputs (logits, or critic values for the Wasserstein loss) and returns
a scalar to *minimise*. Probabilities never appear: log D(x) = logsigmoid(x) = -softplus(-x) and
log(1 - D(x)) = -softplus(x) keep the losses finite for any logit.

`GANLoss` pairs a D and a G function and records how D's output reads as a probability (for
logging); it holds no tensors. ganforge's own pairs are chosen by name (`GANLoss("hinge")`); any
other pair is passed as the functions themselves, which a loss yaml wires with Hydra:
`discriminator: {_target_: mypkg.losses.my_d, _partial_: true}` (see the README's Development
section).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ganforge.errors import ConfigError, check_bool


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
    if real_logits is None:
        raise ValueError("the relativistic generator loss needs the real logits")
    # Symmetric to D: G wants fakes judged more real than the average real, and reals less so.
    return (
        F.softplus(-(fake_logits - real_logits.mean())).mean()
        + F.softplus(real_logits - fake_logits.mean()).mean()
    )


DLoss = Callable[[Tensor, Tensor], Tensor]
GLoss = Callable[..., Tensor]

# name -> (D loss, G loss, D output is a logit of a probability?)
_LOSSES: dict[str, tuple[DLoss, GLoss, bool]] = {
    "minimax": (minimax_d, minimax_g, True),
    "non_saturating": (minimax_d, non_saturating_g, True),
    "lsgan": (lsgan_d, lsgan_g, False),
    "hinge": (hinge_d, hinge_g, False),
    "wasserstein": (wasserstein_d, wasserstein_g, False),
    "relativistic": (relativistic_d, relativistic_g, True),
}
LOSS_NAMES = tuple(_LOSSES)


class GANLoss:
    """The adversarial objective named `name` (one of `LOSS_NAMES`), or, when `discriminator` and
    `generator` are given, that pair under the label `name`.

    Args:
        discriminator: `d(real_logits, fake_logits) -> scalar` to minimise.
        generator: `g(fake_logits, real_logits=None) -> scalar` to minimise.
        probabilistic: D's output is the logit of a probability (logged through a sigmoid);
            false: a raw score, logged as it is.
        generator_needs_real: `generator` reads D(x); only then is the extra forward pass made.
    """

    def __init__(
        self,
        name: str,
        discriminator: DLoss | None = None,
        generator: GLoss | None = None,
        probabilistic: bool = False,
        generator_needs_real: bool = False,
    ) -> None:
        self.name = name
        if discriminator is None and generator is None:
            if name not in _LOSSES:
                raise ConfigError(
                    f"loss.name={name!r} is not a known GAN loss; choose one of "
                    f"{list(LOSS_NAMES)} (e.g. loss=hinge on the command line), or give "
                    "loss.discriminator and loss.generator functions"
                )
            self.discriminator, self._generator, self._probabilistic = _LOSSES[name]
            # Only the relativistic G loss looks at D(x); others skip that extra forward pass.
            self.generator_needs_real = name == "relativistic"
            return
        for key, fn in (("discriminator", discriminator), ("generator", generator)):
            if not callable(fn):
                raise ConfigError(
                    f"loss.{key}={fn!r} must be a function (in the loss yaml: "
                    f"{{_target_: mypkg.losses.my_{key[0]}, _partial_: true}})"
                )
        for key, flag in (
            ("probabilistic", probabilistic),
            ("generator_needs_real", generator_needs_real),
        ):
            check_bool(f"loss.{key}", flag)
        assert discriminator is not None and generator is not None  # checked just above
        self.discriminator, self._generator = discriminator, generator
        self._probabilistic, self.generator_needs_real = probabilistic, generator_needs_real

    def generator(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return self._generator(fake_logits, real_logits)

    def d_output(self, logits: Tensor) -> Tensor:
        """Mean D output as logged: a probability for logit losses, the raw critic value else."""
        logits = logits.detach().float()
        return (torch.sigmoid(logits) if self._probabilistic else logits).mean()

    def __repr__(self) -> str:
        return f"GANLoss({self.name!r})"
