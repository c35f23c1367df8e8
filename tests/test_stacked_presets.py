"""PacGAN's Stacked-MNIST networks (models/stacked.py) against the authors' layer lists, their
packing, the uniform prior, and the two presets built on them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_train
from fakes import data_overrides
from ganforge.errors import ConfigError
from ganforge.models.protocols import check_models
from ganforge.models.stacked import (
    Discriminator,
    Generator,
    SameConv2d,
    SameConvTranspose2d,
    same_padding,
)
from ganforge.reproduce import Options, compose_variants, paper_samples, protocol_of
from ganforge.train import train

# The two settings' networks as conf/model/*.yaml builds them (28 px, 3 channels).
UNROLLED_G = dict(z_dim=256, base_width=8, kernel_size=3, n_up=3, output_layer="conv")
UNROLLED_D = dict(base_width=2, kernel_size=3, n_down=3, slope=0.3, first_norm=True)
VEEGAN_G = dict(
    z_dim=100, base_width=64, kernel_size=5, n_up=4, output_layer="deconv", prior="uniform"
)
VEEGAN_D = dict(base_width=64, kernel_size=5, n_down=4, slope=0.2, first_norm=False)


def layers(net: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kind)]


def map_sizes(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape (C, H, W) of every SAME conv / transposed conv, in order."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in net.modules()
        if isinstance(m, (SameConv2d, SameConvTranspose2d))
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return shapes


# --- TensorFlow's SAME geometry -------------------------------------------------------------------
def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(28, 3, 2) == (0, 1)  # 28 -> 14
    assert same_padding(7, 3, 2) == (1, 1)  # 7 -> 4
    assert same_padding(14, 5, 2) == (1, 2)  # 14 -> 7
    assert same_padding(28, 3, 1) == (1, 1)  # stride 1 keeps the size


@pytest.mark.parametrize(("size", "kernel"), [(28, 3), (14, 3), (7, 3), (28, 5), (7, 5), (4, 5)])
def test_transposed_conv_is_the_adjoint_of_the_same_conv(size: int, kernel: int) -> None:
    """<conv(x), y> = <x, deconv(y)> with shared weights and no bias: the transposed conv is
    TensorFlow's conv2d_transpose, the gradient of the SAME conv, cropped where that conv pads."""
    torch.manual_seed(0)
    conv, deconv = SameConv2d(2, 3, kernel, 2, size), SameConvTranspose2d(3, 2, kernel, size)
    deconv.deconv.weight.data.copy_(conv.conv.weight.data)
    nn.init.zeros_(conv.conv.bias), nn.init.zeros_(deconv.deconv.bias)
    x = torch.randn(2, 2, size, size)
    y = torch.randn(2, 3, math.ceil(size / 2), math.ceil(size / 2))
    with torch.no_grad():
        lhs, rhs = (conv(x) * y).sum(), (x * deconv(y)).sum()
    assert deconv(y).shape == x.shape
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)


# --- the Unrolled-GAN setting (PacGAN Table 3) ----------------------------------------------------
def test_unrolled_generator_is_the_authors_layer_list() -> None:
    G = Generator(channels=3, image_size=28, **UNROLLED_G)
    assert (G.project.in_features, G.project.out_features) == (256, 4 * 4 * 64)
    deconvs = [m.deconv for m in layers(G, SameConvTranspose2d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(64, 32), (32, 16), (16, 8)]
    assert {(d.kernel_size, d.stride) for d in deconvs} == {((3, 3), (2, 2))}
    (out,) = [m.conv for m in layers(G, SameConv2d)]
    assert (out.in_channels, out.out_channels, out.kernel_size, out.stride) == (
        8,
        3,
        (3, 3),
        (1, 1),
    )
    # BatchNorm-ReLU after the projection and after every transposed conv, none on the output.
    assert [bn.num_features for bn in layers(G, nn.BatchNorm2d)] == [64, 32, 16, 8]
    z = torch.randn(5, 256)
    assert map_sizes(G, z) == [(32, 7, 7), (16, 14, 14), (8, 28, 28), (3, 28, 28)]
    x = G(z)
    assert x.shape == (5, 3, 28, 28) and x.abs().max() <= 1


@pytest.mark.parametrize(("d_width", "maps"), [(2, [2, 4, 8]), (4, [4, 8, 16])])
def test_unrolled_discriminator_quarter_and_half_of_g(d_width: int, maps: list[int]) -> None:
    D = Discriminator(channels=3, image_size=28, **{**UNROLLED_D, "base_width": d_width})
    convs = [m.conv for m in layers(D, SameConv2d)]
    assert [c.out_channels for c in convs] == maps
    assert {(c.kernel_size, c.stride) for c in convs} == {((3, 3), (2, 2))}
    assert [bn.num_features for bn in layers(D, nn.BatchNorm2d)] == maps  # the first one too
    assert {a.negative_slope for a in layers(D, nn.LeakyReLU)} == {0.3}
    (head,) = layers(D, nn.Linear)
    assert (head.in_features, head.out_features) == (maps[-1] * 4 * 4, 1)
    assert map_sizes(D, torch.randn(4, 3, 28, 28))[-1] == (maps[-1], 4, 4)


# --- the VEEGAN setting (PacGAN Table 2) ----------------------------------------------------------
def test_veegan_dcgan_is_the_authors_layer_list() -> None:
    G = Generator(channels=3, image_size=28, **VEEGAN_G)
    assert (G.project.in_features, G.project.out_features) == (100, 2 * 2 * 512)
    deconvs = [m.deconv for m in layers(G, SameConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [256, 128, 64, 3]
    assert {(d.kernel_size, d.stride) for d in deconvs} == {((5, 5), (2, 2))}
    assert [bn.num_features for bn in layers(G, nn.BatchNorm2d)] == [512, 256, 128, 64]
    assert map_sizes(G, torch.randn(3, 100))[-1] == (3, 28, 28)

    D = Discriminator(channels=3, image_size=28, **VEEGAN_D)
    convs = [m.conv for m in layers(D, SameConv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]
    assert {(c.kernel_size, c.stride) for c in convs} == {((5, 5), (2, 2))}
    assert [bn.num_features for bn in layers(D, nn.BatchNorm2d)] == [128, 256, 512]
    assert {a.negative_slope for a in layers(D, nn.LeakyReLU)} == {0.2}
    (head,) = layers(D, nn.Linear)
    assert head.in_features == 512 * 2 * 2
    check_models(G, D, image=True)


def test_uniform_prior_feeds_g_exactly_uniform_latents() -> None:
    """ganforge draws z ~ N(0, I) everywhere; prior=uniform maps it to U(-1, 1) before G."""
    G = Generator(channels=3, image_size=28, **{**VEEGAN_G, "base_width": 1})
    seen: list[torch.Tensor] = []
    G.project.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    with torch.no_grad():
        G(torch.randn(4000, 100, generator=torch.Generator().manual_seed(0)))
    u = seen[0]
    assert u.min() > -1 and u.max() < 1
    # Each quarter of (-1, 1) holds a quarter of the values (a normal would put 15.9 % below
    # -1 and pile up near 0).
    counts = torch.histc(u, bins=4, min=-1, max=1) / u.numel()
    torch.testing.assert_close(counts, torch.full((4,), 0.25), atol=0.01, rtol=0)
    assert Generator(channels=3, **UNROLLED_G).prior == "normal"


def test_weights_start_as_the_authors_code_draws_them() -> None:
    torch.manual_seed(0)
    G, D = Generator(channels=3, **VEEGAN_G), Discriminator(channels=3, **VEEGAN_D)
    for conv in [m.conv for m in layers(D, SameConv2d)]:
        assert conv.weight.abs().max() <= 0.04  # truncated at 2 std
        assert not conv.bias.any()
    w = torch.cat([m.deconv.weight.detach().flatten() for m in layers(G, SameConvTranspose2d)])
    assert abs(float(w.std()) - 0.02) < 0.001 and w.abs().max() > 0.04  # a full normal
    for bn in layers(G, nn.BatchNorm2d) + layers(D, nn.BatchNorm2d):
        assert bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())


# --- packing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pack", [1, 2, 4])
def test_packed_discriminator_stacks_consecutive_samples_along_channels(pack: int) -> None:
    """As the authors' tf.concat(G_sep, 3): pack slot j holds channels 3j..3j+2."""
    D = Discriminator(channels=3, image_size=28, **UNROLLED_D, pack=pack).eval()
    assert layers(D, SameConv2d)[0].conv.in_channels == 3 * pack
    x = torch.randn(8, 3, 28, 28)
    with torch.no_grad():
        logits = D(x)
        by_hand = torch.cat([D.net(x[i : i + pack].reshape(1, 3 * pack, 28, 28)) for i in
                             range(0, 8, pack)]).flatten()  # fmt: skip
    assert logits.shape == (8 // pack,)
    torch.testing.assert_close(logits, by_hand)
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        Discriminator(channels=3, **UNROLLED_D, pack=3)(x)


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_size", [64, 16, None])
def test_an_image_size_the_networks_cannot_take_names_data_image_size(image_size) -> None:
    for build in (
        lambda: Generator(image_size=image_size),
        lambda: Discriminator(image_size=image_size),
    ):
        with pytest.raises(ConfigError, match=r"data\.image_size=.*\[28, 32\]"):
            build()


def test_bad_network_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.prior='gauss'"):
        Generator(prior="gauss")
    with pytest.raises(ConfigError, match="output_layer"):
        Generator(output_layer="upsample")
    with pytest.raises(ConfigError, match=r"model\.d_width=0"):
        Discriminator(base_width=0)
    with pytest.raises(ConfigError, match=r"model\.pack=0"):
        Discriminator(pack=0)


@pytest.mark.parametrize("model", ["unrolled_dcgan", "veegan_dcgan"])
@pytest.mark.parametrize("image_size", [28, 32])
def test_model_configs_build_the_networks(tmp_path: Path, model: str, image_size: int) -> None:
    cfg = compose_train(tmp_path, f"model={model}", "data=mnist", f"data.image_size={image_size}")
    G, D = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    check_models(G, D, image=True)
    x = G(torch.randn(4, G.z_dim))
    assert x.shape == (4, 1, image_size, image_size) and D(x).shape == (4,)


def test_g_steps_below_one_is_refused_naming_the_key(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=toy_ring", "model=mlp", "system.g_steps=0")
    with pytest.raises(ConfigError, match=r"system\.g_steps=0 must be a positive integer"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# --- the presets ----------------------------------------------------------------------------------
# preset -> (packs per batch, the paper's evaluation sample count, shrink for a quick run)
PRESETS = {
    "pacgan_stacked_mnist": (128, 25600, []),
    "pacgan_stacked_mnist_veegan": (64, 26000, ["model.g_width=4", "model.d_width=4"]),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_runs_fast_dev_run_on_its_28_px_data(tmp_path: Path, preset: str) -> None:
    probe = compose_train(tmp_path, f"experiment={preset}")
    assert probe.data.image_size == 28 and probe.model.pack == 2
    cfg = compose_train(
        tmp_path,
        f"experiment={preset}",
        "debug=fast_dev_run",
        "data.batch_size=8",  # 4 packs of 2
        *PRESETS[preset][2],
        *data_overrides("stacked_mnist", tmp_path),
        "data.image_size=28",
    )
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


def test_veegan_preset_takes_two_g_steps_on_a_fixed_set_and_a_uniform_prior(
    tmp_path: Path,
) -> None:
    cfg = compose_train(tmp_path, "experiment=pacgan_stacked_mnist_veegan")
    assert cfg.system.g_steps == 2 and cfg.data.n_samples == 128000
    assert cfg.model.generator.prior == "uniform" and cfg.model.generator.kernel_size == 5
    table3 = compose_train(tmp_path, "experiment=pacgan_stacked_mnist")
    assert table3.system.g_steps == 1 and table3.data.n_samples is None
    assert (table3.optim.lr_d, table3.optim.lr_g, list(table3.optim.betas)) == (
        2e-4,
        1e-4,
        [0.5, 0.99],
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_paper_variants_keep_the_papers_packs_per_batch(preset: str) -> None:
    """Each variant's batch is the paper's packs per batch times its pack, the final evaluation
    draws the paper's sample count, and the paper's metrics are the mode metric's keys."""
    per_batch, n_samples, _ = PRESETS[preset]
    variants = compose_variants(Options(experiment=preset))
    assert {v.name for v in variants} >= {"DCGAN", "PacDCGAN2", "PacDCGAN4"}
    for v in variants:
        assert v.cfg.data.batch_size == per_batch * v.cfg.model.pack, v.name
        assert v.cfg.model.pack == (1 if v.name.startswith("DCGAN") else int(v.name[8])), v.name
        assert set(v.paper) == {"val/modes", "val/reverse_kl"}, v.name
        assert v.cfg.callbacks.evaluation.final_n_samples == n_samples
        assert v.cfg.system.ema_decay is None
        protocol = protocol_of(v.cfg)
        assert protocol is not None and paper_samples(protocol, "val/modes") == n_samples
    half = [v for v in variants if v.name.endswith("_halfD")]
    assert all(v.cfg.model.d_width == 4 for v in half)
    assert len(half) == (4 if preset == "pacgan_stacked_mnist" else 0)
