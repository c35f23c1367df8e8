"""Discriminator regularizers: pure functions of D and a batch, each a scalar added to D's loss,
and `PENALTIES`, the one table of them that the GAN system iterates.

`D` is any callable from a batch to one output per pack: the GAN system passes D with the labels
and DiffAugment already bound, so the penalties constrain exactly the function D is trained as:
the input whose gradient is taken is the image *before* augmentation, and D sees it through the
same augmentation as in its loss (R3GAN's form: brownvc/R3GAN R3GAN/Trainer.py:29-36, where the
augmenting `Preprocessor` sits inside the graph from the samples to the logits).
With PacGAN packing (`pack` = m > 1), one output depends on m consecutive samples: its input is
the whole pack, so gradient norms are taken over the pack and averaged over packs.

A penalty on the gradient at the batch's own images (R1 on the reals, R2 on the fakes) needs no
forward of its own: when the batch requires grad before D's loss forward, it is read off that
forward's outputs (`Penalty.of_outputs`), as R3GAN's Trainer.py:28-36 does. The same value as
`r1_penalty(D, real)`'s own forward; one D forward (and one backward through it) fewer per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:  # settings.py imports this table to check the settings it names
    from ganforge.settings import Settings


def watched(x: Tensor) -> Tensor:
    """`x` as an input whose gradient D's outputs can give: detached first, so the gradient is
    w.r.t. this input alone, never through whatever made it (G, for fakes)."""
    return x.detach().requires_grad_(True)


def input_grad_sq_norm(out: Tensor, x: Tensor, pack: int = 1) -> Tensor:
    """Per-pack squared norm of d(sum of D's outputs `out`)/dx, summed over pixels, kept in the
    graph (double backprop) so the penalty can be minimised; `x` is `watched`, then seen by D."""
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.reshape(x.shape[0] // pack, -1).pow(2).sum(1)


def zero_centred(out: Tensor, x: Tensor, pack: int = 1) -> Tensor:
    """E[||grad D(x)||^2] from D's outputs `out` on the `watched` batch `x`: R1 on reals, R2 on
    fakes (Mescheder et al. 2018)."""
    return input_grad_sq_norm(out, x, pack).mean()


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
    The interpolates are no batch D's loss sees: this penalty always runs its own forward.
    """
    n_packs = real.shape[0] // pack
    eps_shape = (n_packs,) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    eps = eps.repeat_interleave(pack, dim=0)
    x_hat = watched(eps * real.detach() + (1 - eps) * fake.detach())
    # +1e-12 keeps the sqrt differentiable where the gradient is exactly zero.
    norm = (input_grad_sq_norm(D(x_hat), x_hat, pack) + 1e-12).sqrt()
    return (norm - 1).pow(2).mean()


def r1_penalty(D: Callable[[Tensor], Tensor], real: Tensor, pack: int = 1) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller applies gamma / 2."""
    x = watched(real)
    return zero_centred(D(x), x, pack)


def r2_penalty(D: Callable[[Tensor], Tensor], fake: Tensor, pack: int = 1) -> Tensor:
    """R2 (Mescheder et al. 2018, beside R1; both every step in R3GAN, Huang et al. 2024):
    E[||grad D(x)||^2] on generated data, the gradient w.r.t. the fakes only; the caller applies
    gamma / 2."""
    x = watched(fake)
    return zero_centred(D(x), x, pack)


@dataclass(frozen=True)
class Penalty:
    """One penalty on D: added to D's loss as `scale * weight * interval * function(...)` in the
    D updates of every `interval`-th iteration while its weight is > 0. `weight` and `interval`
    name fields of `ganforge.settings.Settings` (`system.<field>` in the config), which checks
    them; `interval` None: every D update."""

    name: str
    metric: str  # the logged name of the weighted term
    weight: str
    interval: str | None
    needs: Literal["real", "fake", "both"]  # which batch the function reads
    scale: float  # R1 and R2 are written gamma/2 * R in their papers
    function: Callable[..., Tensor]  # of D (a callable) and the batch(es), with its own forward
    # The same value from D's outputs on the `needs` batch, `watched` before D's loss forward
    # saw it: (outputs, batch, pack) -> penalty. None: the penalty needs a forward of its own.
    of_outputs: Callable[[Tensor, Tensor, int], Tensor] | None = None

    def __post_init__(self) -> None:
        # Read off D's loss forward, a penalty is at one batch D's loss judges, reals or fakes.
        assert self.of_outputs is None or self.needs != "both", self.name

    def __call__(
        self,
        D: Callable[[Tensor], Tensor],
        real: Tensor,
        D_fake: Callable[[Tensor], Tensor],
        fake: Tensor,
        pack: int = 1,
    ) -> Tensor:
        """The unweighted penalty on this D update's batches, by its own forward: `D` judges reals
        (and interpolates, which keep the reals' labels), `D_fake` fakes (with the labels G was
        asked for)."""
        if self.needs == "real":
            return self.function(D, real, pack=pack)
        if self.needs == "fake":
            return self.function(D_fake, fake, pack=pack)
        return self.function(D, real, fake, pack=pack)

    def due(self, settings: Settings, iteration: int) -> float:
        """The factor `weight * interval * scale` it enters D's loss with after `iteration` GAN
        iterations, 0 when off or not due. Lazy regularization (Karras et al. 2020): applied
        every k iterations, scaled by k so that the expected penalty is unchanged."""
        weight = getattr(settings, self.weight)
        every = 1 if self.interval is None else getattr(settings, self.interval)
        if weight == 0 or iteration % every != 0:
            return 0.0
        return self.scale * weight * every


PENALTIES: tuple[Penalty, ...] = (
    # WGAN-GP (Gulrajani et al. 2017): lambda * E[(||grad D(x_hat)|| - 1)^2], every D update.
    Penalty("gp", "train/gp", "gp_weight", None, "both", 1.0, gradient_penalty),
    # R1 (Mescheder et al. 2018) on reals and R2 on fakes: R3GAN's (gamma/2) * (R1 + R2) with
    # gamma = r1_gamma = r2_gamma (brownvc/R3GAN R3GAN/Trainer.py:35-41), every step by default.
    Penalty("r1", "train/r1", "r1_gamma", "r1_interval", "real", 0.5, r1_penalty, zero_centred),
    Penalty("r2", "train/r2", "r2_gamma", "r2_interval", "fake", 0.5, r2_penalty, zero_centred),
)


# D as the GAN system trains it: (images, labels or None) -> (logits, ACGAN class logits or None).
Judge = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]
Judged = tuple[Tensor, Tensor | None]


def judge_with_penalties(
    judge: Judge,
    real: Tensor,
    fake: Tensor,
    y_real: Tensor | None,
    y_fake: Tensor | None,
    due: Sequence[tuple[Penalty, float]],
    pack: int = 1,
) -> tuple[Judged, Judged, dict[str, Tensor]]:
    """`judge` on one D update's reals and fakes, and the `due` penalties (each with the factor it
    enters D's loss with), keyed by metric name and weighted. R1 and R2 are read off these very
    outputs (R3GAN's Trainer.py:28-36): the batch they need is `watched` before D sees it. The
    gradient penalty judges its interpolates with the reals' labels."""
    from ganforge.compile import eager  # compile.py reads PENALTIES: imported here, not above

    shared = {p.needs for p, _ in due if p.of_outputs is not None}
    real = watched(real) if "real" in shared else real
    fake = watched(fake) if "fake" in shared else fake
    # Double backward cannot run through compiled graphs: a forward a penalty differentiates,
    # and a penalty's own, run eagerly.
    with eager() if shared else contextlib.nullcontext():
        judged = {"real": judge(real, y_real), "fake": judge(fake, y_fake)}
    penalties: dict[str, Tensor] = {}
    for penalty, factor in due:
        if penalty.of_outputs is not None:
            x = real if penalty.needs == "real" else fake
            value = penalty.of_outputs(judged[penalty.needs][0], x, pack)
        else:
            with eager():
                value = penalty(
                    lambda x: judge(x, y_real)[0], real, lambda x: judge(x, y_fake)[0], fake, pack
                )
        penalties[penalty.metric] = factor * value
    return judged["real"], judged["fake"], penalties
