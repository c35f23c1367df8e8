"""R1 and R2 read off D's loss forward (R3GAN's one forward, `Penalty.of_outputs`) are the
penalties of their own forward (`Penalty.__call__`): the same values, and the same gradient of
D's loss on D's weights, for plain, packed, projection, ACGAN and R3GAN discriminators."""

from __future__ import annotations

import pytest
import torch

from conftest import toy_system
from ganforge.augment import diff_augment
from ganforge.losses import GANLoss
from ganforge.models import mlp, r3gan
from ganforge.regularizers import PENALTIES


def image_nets(kind: str) -> dict:
    """G and D for 1x8x8 images (R3GAN's at 28 px), as a toy_system's keywords."""
    cond = {"projection": "projection", "acgan": "acgan"}.get(kind, "none")
    n = None if cond == "none" else 4
    if kind == "r3gan":
        G = r3gan.Generator(z_dim=8, channels=1, image_size=28, width=16, blocks=1)
        D = r3gan.Discriminator(channels=1, image_size=28, width=16, blocks=1)
    else:
        G = mlp.Generator(z_dim=8, hidden=16, depth=1, channels=1, image_size=8)
        D = mlp.Discriminator(
            hidden=16, depth=2, channels=1, image_size=8, pack=2 if kind == "packed" else 1,
            conditional=cond, n_classes=n,
        )  # fmt: skip
    if n is not None:
        G = mlp.Generator(
            z_dim=8, hidden=16, depth=1, channels=1, image_size=8, conditional=cond, n_classes=n
        )
    return {"generator": G, "discriminator": D}


def batches(kind: str, dtype=torch.float32):
    size = 28 if kind == "r3gan" else 8
    g = torch.Generator().manual_seed(5)
    n = 4 if kind == "r3gan" else 8  # R3GAN's D is the slow one on a CPU
    real, fake = (torch.randn(n, 1, size, size, generator=g, dtype=dtype) for _ in range(2))
    conditional = kind in ("projection", "acgan")
    y_real = torch.randint(4, (n,), generator=g) if conditional else None
    y_fake = torch.randint(4, (n,), generator=g) if conditional else None
    return real, fake, y_real, y_fake


def separate(system, real, fake, y, y_fake) -> dict[str, torch.Tensor]:
    """Each penalty due by its own forward of D, as the system applied them before."""
    out = {}
    for p in PENALTIES:
        factor = p.due(system.settings, system.iteration)
        if factor:
            D_real = lambda x: system.discriminate(x, y)[0]  # noqa: E731
            D_fake = lambda x: system.discriminate(x, y_fake)[0]  # noqa: E731
            out[p.metric] = factor * p(D_real, real, D_fake, fake, pack=system.pack)
    return out


KINDS = ["plain", "packed", "projection", "acgan", "r3gan"]
SETTINGS = dict(loss=GANLoss("rpgan"), r1_gamma=2.0, r2_gamma=3.0, gp_weight=1.5)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_forward_penalties_equal_their_own_forwards(kind: str) -> None:
    system = toy_system(**image_nets(kind), **SETTINGS)[0]
    real, fake, y, y_fake = batches(kind)
    torch.manual_seed(1)  # the gradient penalty's interpolation weights
    shared = system._judge(real, fake, y, y_fake)[2]
    torch.manual_seed(1)
    own = separate(system, real, fake, y, y_fake)
    assert list(shared) == list(own) == ["train/gp", "train/r1", "train/r2"]
    for key, value in own.items():
        assert value > 0 and shared[key].requires_grad
        torch.testing.assert_close(shared[key], value, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "kind",
    [*KINDS[:-1], pytest.param("r3gan", marks=pytest.mark.slow)],  # ~30 s in float64
)
def test_shared_forward_gives_d_the_same_gradient(kind: str) -> None:
    system = toy_system(**image_nets(kind), **SETTINGS)[0].double()
    real, fake, y, y_fake = batches(kind, torch.float64)

    def d_grads(d_real, d_fake, penalties) -> list[torch.Tensor]:
        system.D.zero_grad(set_to_none=True)
        loss = system.loss.discriminator(d_real, d_fake) + sum(penalties.values())
        loss.backward()
        return [p.grad.clone() for p in system.D.parameters() if p.grad is not None]

    torch.manual_seed(1)
    (d_real, _), (d_fake, _), penalties = system._judge(real, fake, y, y_fake)
    shared = d_grads(d_real, d_fake, penalties)
    torch.manual_seed(1)
    d_real, d_fake = system.discriminate(real, y)[0], system.discriminate(fake, y_fake)[0]
    own = d_grads(d_real, d_fake, separate(system, real, fake, y, y_fake))
    assert len(shared) == len(own) > 0
    for a, b in zip(shared, own, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_lazy_intervals_watch_only_the_batch_a_due_penalty_reads() -> None:
    system = toy_system(**image_nets("plain"), r1_gamma=1.0, r2_gamma=1.0, r2_interval=2)[0]
    real, fake, _, _ = batches("plain")
    seen: list[bool] = []
    forward = system.D.forward
    system.D.forward = lambda x, y=None: seen.append(x.requires_grad) or forward(x, y)
    system.iteration = 1  # R1 due, R2 not
    assert list(system._judge(real, fake)[2]) == ["train/r1"] and seen == [True, False]
    seen.clear()
    system.settings = type(system.settings)(r2_gamma=1.0)
    system.iteration = 0
    assert list(system._judge(real, fake)[2]) == ["train/r2"] and seen == [False, True]
    seen.clear()
    system.settings = type(system.settings)()  # no penalty: D's loss forward as without them
    assert system._judge(real, fake)[2] == {} and seen == [False, False]


def test_through_diffaugment_the_penalty_reads_the_losss_own_augmentation() -> None:
    # R3GAN's Trainer.py:28-36: the augmenting preprocessor sits inside the one graph, so R1 is
    # taken at the un-augmented reals through the very augmentation D's loss judged.
    system = toy_system(**image_nets("plain"), r1_gamma=2.0, diffaugment="translation,cutout")[0]
    real, fake, _, _ = batches("plain")
    torch.manual_seed(3)
    (d_real, _), _, penalties = system._judge(real, fake)
    torch.manual_seed(3)
    x = real.clone().requires_grad_(True)
    out = system.D(diff_augment(x, system.augment_policy))
    torch.testing.assert_close(d_real, out)  # the loss's forward: the same augmentation draw
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(penalties["train/r1"], grad.flatten(1).pow(2).sum(1).mean())
