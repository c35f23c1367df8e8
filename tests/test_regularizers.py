"""R1, the gradient penalty and DiffAugment against closed forms: discriminators whose input
gradient is known exactly, and augmentations whose effect can be read off the pixels."""

from __future__ import annotations

import pytest
import torch

from ganforge import augment
from ganforge.augment import diff_augment, parse_policy
from ganforge.errors import ConfigError
from ganforge.models.layers import pack_samples
from ganforge.regularizers import gradient_penalty, r1_penalty

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
