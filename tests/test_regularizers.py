"""R1, the gradient penalty and DiffAugment against closed forms: discriminators whose input
gradient is known exactly, and augmentations whose effect can be read off the pixels."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra.core.config_store import ConfigStore

from ganforge import augment
from ganforge.augment import diff_augment, parse_policy
from ganforge.errors import ConfigError
from ganforge.losses import GANLoss
from ganforge.models import mlp
from ganforge.models.layers import pack_samples
from ganforge.regularizers import PENALTIES, gradient_penalty, r1_penalty, r2_penalty
from ganforge.settings import Settings

X = torch.randn(6, 2, 3, 3, dtype=torch.float64)
Y = torch.randn(6, 2, 3, 3, dtype=torch.float64)


def linear_d(w: torch.Tensor, pack: int = 1):
    """D(x) = <w, pack(x)>: its gradient is w everywhere, so ||grad D|| = ||w||."""
    return lambda x: pack_samples(x.flatten(1), pack) @ w


def half_square_d(pack: int = 1):
    """D(x) = ||pack(x)||^2 / 2: its gradient is the (packed) input itself."""
    return lambda x: pack_samples(x.flatten(1), pack).pow(2).sum(1) / 2


@pytest.mark.parametrize("pack", [1, 2, 3])
def test_r1_and_gp_of_a_linear_discriminator(pack: int) -> None:
    w = torch.randn(18 * pack, dtype=torch.float64)
    norm = w.norm().item()
    assert r1_penalty(linear_d(w, pack), X, pack=pack).item() == pytest.approx(norm**2)
    gp = gradient_penalty(linear_d(w, pack), X, Y, pack=pack).item()
    assert gp == pytest.approx((norm - 1) ** 2)


@pytest.mark.parametrize("pack", [1, 2, 3])
def test_r1_and_gp_of_a_quadratic_discriminator(pack: int) -> None:
    packs_x = X.reshape(6 // pack, -1)
    assert r1_penalty(half_square_d(pack), X, pack=pack).item() == pytest.approx(
        packs_x.pow(2).sum(1).mean().item()
    )
    # The same eps draw as inside gradient_penalty: one weight per pack.
    eps = torch.rand(6 // pack, 1, generator=torch.Generator().manual_seed(3), dtype=X.dtype)
    x_hat = eps * packs_x + (1 - eps) * Y.reshape(6 // pack, -1)
    expected = (x_hat.norm(dim=1) - 1).pow(2).mean().item()
    gp = gradient_penalty(
        half_square_d(pack), X, Y, generator=torch.Generator().manual_seed(3), pack=pack
    )
    assert gp.item() == pytest.approx(expected)


def test_packed_penalties_take_the_norm_over_the_pack() -> None:
    # A packed D's input is the whole pack. Per-sample norms (pack=1) would see only each
    # sample's half of w, under-counting R1 by the pack size.
    w = torch.randn(36, dtype=torch.float64)
    norm_sq = w.pow(2).sum().item()
    assert r1_penalty(linear_d(w, 2), X, pack=2).item() == pytest.approx(norm_sq)
    assert r1_penalty(linear_d(w, 2), X, pack=1).item() == pytest.approx(norm_sq / 2)


def test_penalties_stay_in_the_graph() -> None:
    w = torch.randn(18, dtype=torch.float64, requires_grad=True)
    (r1_penalty(linear_d(w), X) + gradient_penalty(linear_d(w), X, Y)).backward()
    # d/dw [||w||^2 + (||w|| - 1)^2] = 2w + 2(||w|| - 1) w / ||w||
    n = w.norm()
    torch.testing.assert_close(w.grad, (2 * w + 2 * (n - 1) * w / n).detach())


# --- DiffAugment ---------------------------------------------------------------------------------
def test_policy_parsing_names_the_key() -> None:
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy(None) == parse_policy("") == ()
    with pytest.raises(ConfigError, match=r"system\.diffaugment='colour'.*color,translation"):
        parse_policy("colour")


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_is_differentiable(policy: str) -> None:
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, parse_policy(policy))
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_moves_content_by_at_most_an_eighth() -> None:
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 8, 8] = 1.0  # one lit pixel per image
    out = augment.translation(x, torch.Generator().manual_seed(0))
    lit = (out[:, 0] == 1.0).nonzero()
    assert len(lit) == 64  # each image still has exactly one lit pixel: a pure shift
    shifts = lit[:, 1:] - 8
    assert shifts.abs().max() <= 2 and len({tuple(s) for s in shifts.tolist()}) > 5
    # What slides in from outside the frame is zero.
    edge = augment.translation(torch.ones(64, 1, 16, 16), torch.Generator().manual_seed(0))
    assert set(edge.unique().tolist()) == {0.0, 1.0}


def test_cutout_zeroes_one_square_of_half_the_size() -> None:
    out = augment.cutout(torch.ones(64, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # 8x8 when inside, less at the border
    rows = (out[:, 0] == 0).any(2).sum(1)
    cols = (out[:, 0] == 0).any(1).sum(1)
    assert torch.equal(rows * cols, zeros)  # a rectangle


def test_color_draws_one_factor_per_sample() -> None:
    x = torch.rand(256, 3, 4, 4) * 2 - 1
    shift = augment.brightness(x, torch.Generator().manual_seed(0)) - x
    per_sample = shift.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample[:, 0].min() >= -0.5 and per_sample[:, 0].max() <= 0.5
    assert per_sample[:, 0].std() > 0.2  # uniform over [-0.5, 0.5]: std 0.29
    grey = augment.saturation(x.mean(1, keepdim=True).expand_as(x).clone())
    torch.testing.assert_close(grey, x.mean(1, keepdim=True).expand_as(x))


def test_diffaugment_refuses_points() -> None:
    with pytest.raises(ConfigError, match=r"system\.diffaugment=color.*null"):
        diff_augment(torch.randn(8, 2), ("color",))


# --- R2 and the penalty table ----------------------------------------------------------------
def test_r2_of_a_linear_and_a_quadratic_discriminator_reads_the_fakes() -> None:
    w = torch.randn(18, dtype=torch.float64)
    assert r2_penalty(linear_d(w), Y).item() == pytest.approx(w.pow(2).sum().item())
    # D(x) = ||x||^2 / 2: the gradient is the input, so R2 is the fakes' mean squared norm.
    expected = Y.flatten(1).pow(2).sum(1).mean().item()
    assert r2_penalty(half_square_d(), Y).item() == pytest.approx(expected)
    r2 = PENALTIES[[p.name for p in PENALTIES].index("r2")]
    assert r2.needs == "fake" and r2(
        linear_d(X.flatten()[:18]), X, half_square_d(), Y
    ).item() == pytest.approx(expected)


def test_r2_moves_d_and_never_reaches_g() -> None:
    # A linear G(z) = a * z: the penalty's gradient stops at the fakes (detached from G) and
    # reaches D's weights through double backprop.
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    w = torch.randn(18, dtype=torch.float64, requires_grad=True)
    fake = a * Y
    r2_penalty(linear_d(w), fake).backward()
    assert a.grad is None
    torch.testing.assert_close(w.grad, 2 * w.detach())  # d/dw ||w||^2


def test_every_penalty_is_one_table_entry_with_its_settings() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    # The config's system node is the settings' fields (conf/system/default.yaml pulls it in).
    node = ConfigStore.instance().load("system_settings.yaml").node
    for p in PENALTIES:
        assert p.metric == f"train/{p.name}" and p.needs in ("real", "fake", "both")
        for key in filter(None, (p.weight, p.interval)):
            assert key in names and key in node, key
    assert [p.name for p in PENALTIES] == ["gp", "r1", "r2"]


def test_lazy_penalties_are_due_every_k_iterations_scaled_by_k() -> None:
    r1, r2 = (p for p in PENALTIES if p.name in ("r1", "r2"))
    s = Settings(r1_gamma=0.2, r1_interval=4, r2_gamma=0.1)
    assert [r1.due(s, it) for it in range(6)] == [0.4, 0, 0, 0, 0.4, 0]  # 0.5 * 0.2 * 4
    assert [r2.due(s, it) for it in range(3)] == [0.05] * 3  # every step by default
    assert r2.due(Settings(), 0) == 0.0  # off unless its gamma is set


# --- the penalties as the GAN system applies them ------------------------------------------------
def image_system(**settings):
    from conftest import toy_system

    G = mlp.Generator(z_dim=4, hidden=16, depth=1, channels=1, image_size=8)
    D = mlp.Discriminator(hidden=16, depth=1, channels=1, image_size=8)
    return toy_system(generator=G, discriminator=D, **settings)[0]


def test_r1_and_r2_take_the_gradient_of_the_unaugmented_image_through_diffaugment() -> None:
    torch.manual_seed(0)
    system = image_system(
        loss=GANLoss("rpgan"), r1_gamma=2.0, r2_gamma=3.0, diffaugment="translation,cutout"
    )
    real, fake = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    torch.manual_seed(1)
    (d_real, _), _, penalties = system._judge(real, fake)
    # By hand: D(T(x)) with T drawn from the same stream, in the loss's order (reals, then fakes:
    # R1 and R2 read the loss's own forward); the gradient is w.r.t. x, the image before
    # augmentation.
    torch.manual_seed(1)
    by_hand = {}
    for key, x, gamma in (("train/r1", real, 2.0), ("train/r2", fake, 3.0)):
        x = x.clone().requires_grad_(True)
        out = system.D(diff_augment(x, system.augment_policy))
        (grad,) = torch.autograd.grad(out.sum(), x)
        if key == "train/r1":  # D's loss judged the reals through that same draw
            torch.testing.assert_close(d_real, out)
        by_hand[key] = gamma / 2 * grad.flatten(1).pow(2).sum(1).mean()
        # Not the gradient at the augmented image: translation and cutout zero part of it.
        (plain,) = torch.autograd.grad(system.D(x).sum(), x)
        assert not torch.allclose(grad, plain)
    assert penalties.keys() == by_hand.keys()
    for key, value in by_hand.items():
        torch.testing.assert_close(penalties[key], value)
        assert penalties[key].requires_grad  # double backprop: D's loss can minimise it


def test_the_generator_step_never_moves_d_with_rpgan_r1_and_r2() -> None:
    from conftest import quiet_trainer, toy_system

    system, dm = toy_system(loss=GANLoss("rpgan"), r1_gamma=0.1, r2_gamma=0.1, max_iters=3)
    D = list(system.D.parameters())
    grads: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    unmoved: list[bool] = []
    hook = system.on_before_optimizer_step

    def watch(optimizer) -> None:
        hook(optimizer)
        if optimizer is system.trainer.optimizers[1]:  # D's step: the gradients of D's loss
            grads[:] = [p.grad.clone() for p in D]
        else:  # G's step, after G's backward through D: D's gradients are still D's own
            unmoved.append(all(torch.equal(p.grad, g) for p, g in zip(D, grads, strict=True)))
            weights[:] = [p.detach().clone() for p in D]

    def after_iteration(*args) -> None:  # ... and G's step left D's weights where they were
        unmoved.append(all(torch.equal(p, w) for p, w in zip(D, weights, strict=True)))

    system.on_before_optimizer_step = watch
    system.on_train_batch_end = after_iteration
    quiet_trainer().fit(system, dm)
    assert len(unmoved) == 6 and all(unmoved) and system.iteration == 3


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("r1_gamma", "abc", r"system\.r1_gamma='abc' must be a number >= 0"),
        ("gp_weight", -5, r"system\.gp_weight=-5 must be a number >= 0"),
        ("aux_weight", -1.0, r"system\.aux_weight=-1\.0 must be a number >= 0"),
        ("r2_gamma", float("nan"), r"system\.r2_gamma=nan must be a number >= 0"),
        ("r2_gamma", True, r"system\.r2_gamma=True must be a number >= 0"),
        ("r2_interval", 0, r"system\.r2_interval=0 must be a positive integer"),
        ("r1_interval", 2.5, r"system\.r1_interval=2\.5 must be a positive integer"),
    ],
)
def test_settings_refuse_bad_penalty_weights_and_intervals(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**{key: value})


def test_penalties_judge_reals_and_interpolates_with_real_labels_and_fakes_with_theirs() -> None:
    from conftest import toy_system

    G = mlp.Generator(z_dim=8, hidden=16, depth=1, dim=2, conditional="projection", n_classes=8)
    D = mlp.Discriminator(hidden=16, depth=1, dim=2, conditional="projection", n_classes=8)
    system, _ = toy_system(
        generator=G, discriminator=D,
        gp_weight=1.0, r1_gamma=1.0, r2_gamma=1.0,
    )  # fmt: skip
    seen: list[torch.Tensor] = []
    forward = system.D.forward
    system.D.forward = lambda x, y: seen.append(y) or forward(x, y)
    y_real, y_fake = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    penalties = system._judge(torch.randn(4, 2), torch.randn(4, 2), y_real, y_fake)[2]
    assert list(penalties) == ["train/gp", "train/r1", "train/r2"]
    # The loss's forwards on reals (R1 reads it) and on fakes (R2), then the gp's interpolates.
    assert [y.tolist() for y in seen] == [[0] * 4, [1] * 4, [0] * 4]
