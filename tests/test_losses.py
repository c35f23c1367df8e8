"""Each loss against its formula on hand-picked logits, computed the naive way in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ganforge import losses
from ganforge.errors import ConfigError
from ganforge.losses import GANLoss

REAL = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)
FAKE = torch.tensor([-3.0, 1.5, 0.0, -0.5], dtype=torch.float64)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


R, F = REAL.tolist(), FAKE.tolist()

# Each D loss is the negative of what D maximises; each G loss is what G minimises.
EXPECTED_D = {
    "minimax": -(mean(math.log(sig(r)) for r in R) + mean(math.log(1 - sig(f)) for f in F)),
    "non_saturating": -(mean(math.log(sig(r)) for r in R) + mean(math.log(1 - sig(f)) for f in F)),
    "lsgan": 0.5 * (mean((r - 1) ** 2 for r in R) + mean(f**2 for f in F)),
    "hinge": mean(max(0, 1 - r) for r in R) + mean(max(0, 1 + f) for f in F),
    "wasserstein": mean(F) - mean(R),
    "relativistic": -mean(math.log(sig(r - mean(F))) for r in R)
    - mean(math.log(1 - sig(f - mean(R))) for f in F),
    # Paired sample by sample: real i against fake i, not against the batch mean.
    "rpgan": -mean(math.log(sig(r - f)) for r, f in zip(R, F, strict=True)),
}
EXPECTED_G = {
    "minimax": mean(math.log(1 - sig(f)) for f in F),
    "non_saturating": -mean(math.log(sig(f)) for f in F),
    "lsgan": 0.5 * mean((f - 1) ** 2 for f in F),
    "hinge": -mean(F),
    "wasserstein": -mean(F),
    "relativistic": -mean(math.log(sig(f - mean(R))) for f in F)
    - mean(math.log(1 - sig(r - mean(F))) for r in R),
    "rpgan": -mean(math.log(sig(f - r)) for r, f in zip(R, F, strict=True)),
}


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_loss_matches_formula(name: str) -> None:
    loss = GANLoss(name)
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(EXPECTED_D[name], rel=1e-12)
    assert loss.generator(FAKE, REAL).item() == pytest.approx(EXPECTED_G[name], rel=1e-12)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_losses_finite_for_extreme_logits(name: str) -> None:
    loss = GANLoss(name)
    big = torch.tensor([-1e4, 1e4], requires_grad=True)
    d = loss.discriminator(big, big.flip(0))
    g = loss.generator(big, big.flip(0))
    (d + g).backward()
    assert torch.isfinite(d) and torch.isfinite(g) and torch.isfinite(big.grad).all()


def grad_wrt_fake(g_loss, logit: float) -> float:
    f = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    g_loss(f).backward()
    return f.grad.item()


def test_minimax_generator_gradient_vanishes_when_d_rejects_fakes() -> None:
    # D(G(z)) -> 0 means logit -> -inf: early in training, when D easily spots fakes.
    for logit in (-5.0, -10.0, -20.0):
        # d/df log(1 - sigmoid(f)) = -sigmoid(f): vanishes exactly like D(G(z)).
        assert grad_wrt_fake(losses.minimax_g, logit) == pytest.approx(-sig(logit), rel=1e-9)
    assert abs(grad_wrt_fake(losses.minimax_g, -20.0)) < 1e-8
    # The non-saturating loss keeps a gradient of magnitude ~1 there.
    assert grad_wrt_fake(losses.non_saturating_g, -20.0) == pytest.approx(-1.0, rel=1e-6)


def test_d_output_is_probability_for_logit_losses_and_raw_for_critics() -> None:
    logits = torch.tensor([0.0, 0.0])
    assert GANLoss("non_saturating").d_output(logits).item() == pytest.approx(0.5)
    assert GANLoss("wasserstein").d_output(logits + 3).item() == pytest.approx(3.0)


def test_unknown_loss_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"loss\.name='nope'.*hinge"):
        GANLoss("nope")


def test_rpgan_by_hand_on_two_pairs() -> None:
    # Pairs (r, f) = (1, -1) and (0, 2): D's differences r - f are 2 and -2, G's -2 and 2.
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    d = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert losses.rpgan_d(real, fake).item() == pytest.approx(d, rel=1e-6)
    assert losses.rpgan_g(fake, real).item() == pytest.approx(d, rel=1e-6)  # symmetric here
    # RaGAN would compare each real with the fakes' mean (0.5): a different number.
    assert losses.relativistic_d(real, fake).item() != pytest.approx(d, rel=1e-3)
    # Shifting every D output by a constant changes nothing: only the differences count.
    assert losses.rpgan_d(real + 7, fake + 7).item() == pytest.approx(d, rel=1e-6)
    with pytest.raises(ValueError, match="rpgan generator loss needs the real logits"):
        losses.rpgan_g(fake)


# Every fact the rest of ganforge asks about a loss, per loss: (probabilistic, G needs D(x),
# saturating, D's decision threshold).
FACTS = {
    "minimax": (True, False, True, 0.0),
    "non_saturating": (True, False, False, 0.0),
    "lsgan": (False, False, False, 0.5),
    "hinge": (False, False, False, 0.0),
    "wasserstein": (False, False, False, None),
    "relativistic": (True, True, False, 0.0),
    "rpgan": (False, True, False, None),
}


def test_every_loss_is_one_record_with_its_facts() -> None:
    assert set(FACTS) == set(losses.LOSS_NAMES)
    for name, facts in FACTS.items():
        loss = GANLoss(name)
        assert (loss.probabilistic, loss.generator_needs_real, loss.saturating) == facts[:3]
        assert loss.threshold == facts[3] and loss == GANLoss(name)
        assert repr(loss) == f"GANLoss({name!r})"
    with pytest.raises(AttributeError):  # frozen: a fact is not changed behind the callers
        GANLoss("hinge").saturating = True


def test_a_known_loss_refuses_a_contradicting_fact_and_takes_an_agreeing_one() -> None:
    assert GANLoss("rpgan", generator_needs_real=True) == GANLoss("rpgan")
    with pytest.raises(ConfigError, match=r"loss\.probabilistic=True, but ganforge's loss 'hinge'"):
        GANLoss("hinge", probabilistic=True)


def test_a_loss_of_ones_own_states_its_facts() -> None:
    mine = GANLoss("mine", losses.rpgan_d, losses.rpgan_g, generator_needs_real=True, threshold=1)
    assert mine.threshold == 1.0 and mine.generator_needs_real
    assert not mine.probabilistic and not mine.saturating  # unstated: false
    with pytest.raises(ConfigError, match=r"loss\.threshold='zero' must be a number"):
        GANLoss("mine", losses.rpgan_d, losses.rpgan_g, threshold="zero")
    with pytest.raises(ConfigError, match=r"loss\.saturating=1 must be true or false"):
        GANLoss("mine", losses.rpgan_d, losses.rpgan_g, saturating=1)


# `ganforge-train loss=rpgan system.r1_gamma=0.1 system.r2_gamma=0.1 debug=fast_dev_run`, with the
# default DCGAN (on fake MNIST files) and with the MLP on the ring.
@pytest.mark.parametrize(
    "overrides",
    [["model.base_width=4", "data.batch_size=8"], ["model=mlp", "data=toy_ring"]],
    ids=["dcgan", "mlp-toy"],
)
def test_rpgan_with_r1_and_r2_trains(tmp_path, overrides) -> None:
    from conftest import compose_train
    from fakes import data_overrides
    from ganforge.train import train

    data = next((o.split("=")[1] for o in overrides if o.startswith("data=")), "mnist5k")
    cfg = compose_train(
        tmp_path,
        "loss=rpgan",
        "system.r1_gamma=0.1",
        "system.r2_gamma=0.1",
        "debug=fast_dev_run",
        *data_overrides(data, tmp_path),
        *overrides,
    )
    assert cfg.system.r2_gamma == 0.1 and cfg.loss.name == "rpgan"
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    for key in ("train/d_loss", "train/g_loss", "train/r1", "train/r2"):
        assert math.isfinite(metrics[key]) and metrics[key] >= 0, key
    assert metrics["train/d_loss"] > metrics["train/d_adv"]  # the penalties were added
