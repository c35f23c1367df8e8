"""The model zoo's building blocks: spectral norm, PacGAN packing and label routing (cBN,
projection, ACGAN), for the MLP, DCGAN and ResNet discriminators and generators."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganforge.errors import ConfigError
from ganforge.models import dcgan, mlp, protocols, resnet
from ganforge.models.layers import ConditionalBatchNorm2d, Maxout, pack_samples

# Tiny versions of every discriminator, with the input shape each one eats.
D_BUILDERS = {
    "mlp": (lambda **kw: mlp.Discriminator(hidden=16, depth=2, dim=2, **kw), (2,)),
    "mlp-image": (
        lambda **kw: mlp.Discriminator(hidden=16, depth=2, channels=1, image_size=28, **kw),
        (1, 28, 28),
    ),
    # PacGAN's D: maxout units.
    "mlp-maxout": (
        lambda **kw: mlp.Discriminator(hidden=16, depth=2, dim=2, activation="maxout", **kw),
        (2,),
    ),
    "dcgan": (lambda **kw: dcgan.Discriminator(base_width=8, **kw), (1, 28, 28)),
    "resnet32": (lambda **kw: resnet.Discriminator(width=8, **kw), (3, 32, 32)),
    "resnet64": (lambda **kw: resnet.Discriminator(image_size=64, width=8, **kw), (3, 64, 64)),
}
G_BUILDERS = {
    "mlp": lambda **kw: mlp.Generator(z_dim=8, hidden=16, depth=2, dim=2, **kw),
    # PacGAN's G: bias-free linear layers, BatchNorm, ReLU.
    "mlp-bn": lambda **kw: mlp.Generator(
        z_dim=8, hidden=16, depth=2, dim=2, norm="batch", bias=False, **kw
    ),
    "dcgan": lambda **kw: dcgan.Generator(z_dim=8, base_width=8, **kw),
    "resnet32": lambda **kw: resnet.Generator(z_dim=8, width=8, **kw),
    "resnet64": lambda **kw: resnet.Generator(z_dim=8, image_size=64, width=8, **kw),
}


def weighted_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]


# --- spectral norm -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(D_BUILDERS))
@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
def test_spectral_norm_makes_every_d_weight_unit_norm(name: str, conditional: str) -> None:
    build, shape = D_BUILDERS[name]
    D = build(spectral_norm=True, conditional=conditional, n_classes=10)
    layers = weighted_layers(D)
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    # Torch's spectral norm runs one power iteration per training-mode forward pass.
    x, y = torch.randn(4, *shape), torch.randint(10, (4,))
    with torch.no_grad():
        for _ in range(60):
            D(x, y)
    for m in layers:
        w = m.weight.detach()  # the normalised weight W / sigma(W)
        sigma = torch.linalg.svdvals(w.reshape(w.shape[0], -1))[0].item()
        assert sigma == pytest.approx(1.0, abs=0.02), type(m).__name__


def test_spectral_norm_off_leaves_weights_alone_and_dcgan_sn_drops_batchnorm() -> None:
    plain = dcgan.Discriminator(base_width=8)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    sn = dcgan.Discriminator(base_width=8, spectral_norm=True)
    # BatchNorm divides by batch statistics and would undo the Lipschitz bound SN sets.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sn.modules())


# --- packing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(D_BUILDERS))
@pytest.mark.parametrize("pack", [2, 3])
def test_packed_discriminator_sees_m_samples_per_input(name: str, pack: int) -> None:
    build, shape = D_BUILDERS[name]
    D = build(pack=pack)
    first = weighted_layers(D)[0]
    seen: list[torch.Size] = []
    first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    out = D(torch.randn(4 * pack, *shape))
    assert out.shape == (4,)  # one logit per pack
    flat = torch.Size([4, pack * shape[0] * (shape[1] * shape[2] if name == "mlp-image" else 1)])
    expected = flat if name.startswith("mlp") else torch.Size([4, pack * shape[0], *shape[1:]])
    assert seen == [expected]


@pytest.mark.parametrize("name", list(D_BUILDERS))
def test_packed_discriminator_rejects_an_indivisible_batch(name: str) -> None:
    build, shape = D_BUILDERS[name]
    D = build(pack=4)
    with pytest.raises(ConfigError, match=r"10 samples.*model\.pack=4.*data\.batch_size"):
        D(torch.randn(10, *shape))


def test_packing_concatenates_consecutive_samples_along_channels() -> None:
    x = torch.randn(6, 3, 4, 4)
    packed = pack_samples(x, 3)
    assert packed.shape == (2, 9, 4, 4)
    assert torch.equal(packed[1], torch.cat([x[3], x[4], x[5]], dim=0))


def test_bad_pack_and_conditional_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.pack=0"):
        mlp.Discriminator(dim=2, pack=0)
    with pytest.raises(ConfigError, match=r"model\.conditional='concat'"):
        dcgan.Generator(conditional="concat", n_classes=10)
    with pytest.raises(ConfigError, match=r"labelled dataset.*data\.n_classes"):
        dcgan.Discriminator(conditional="projection", n_classes=None)


# --- label routing -------------------------------------------------------------------------------
def test_conditional_batchnorm_applies_the_class_affine_map() -> None:
    cbn = ConditionalBatchNorm2d(3, n_classes=4).eval()
    with torch.no_grad():
        cbn.gamma.weight.copy_(torch.arange(12.0).view(4, 3))
        cbn.beta.weight.copy_(-torch.arange(12.0).view(4, 3))
    x, y = torch.randn(5, 3, 2, 2), torch.tensor([0, 1, 2, 3, 1])
    normed = cbn.bn(x)
    expected = normed * cbn.gamma(y)[:, :, None, None] + cbn.beta(y)[:, :, None, None]
    torch.testing.assert_close(cbn(x, y), expected)
    assert not torch.allclose(cbn(x, y), cbn(x, (y + 1) % 4))


@pytest.mark.parametrize("name", list(G_BUILDERS))
def test_conditional_generator_draws_what_the_label_says(name: str) -> None:
    G = G_BUILDERS[name](conditional="projection", n_classes=10)
    if not name.startswith("mlp"):
        assert any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
        with torch.no_grad():  # make the class embeddings differ, as training would
            for m in G.modules():
                if isinstance(m, ConditionalBatchNorm2d):
                    m.gamma.weight.normal_(1.0, 0.5)
    G.eval()  # batch statistics would couple the samples; eval isolates the label's effect
    z = torch.randn(4, 8)
    y = torch.tensor([0, 1, 2, 3])
    a, b, again = G(z, y), G(z, (y + 5) % 10), G(z, y)
    assert torch.equal(a, again)
    assert (a - b).flatten(1).abs().amax(1).min() > 0  # every sample changed with its label
    with pytest.raises(ValueError, match="labels"):
        G(z)


@pytest.mark.parametrize("name", list(G_BUILDERS))
def test_unconditional_generator_keeps_its_plain_batchnorm(name: str) -> None:
    G = G_BUILDERS[name]()
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
    assert G(torch.randn(2, 8)).shape[0] == 2


def features(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features h that the final linear layer and the projection both read."""
    if isinstance(D, mlp.Discriminator):
        return D.net[:-1](x.flatten(1))
    if isinstance(D, dcgan.Discriminator):
        return D.net[:-1](x).flatten(1)
    return torch.relu(D.blocks(x)).sum(dim=(2, 3))


@pytest.mark.parametrize("name", list(D_BUILDERS))
def test_projection_term_is_the_inner_product_of_embedding_and_features(name: str) -> None:
    build, shape = D_BUILDERS[name]
    D = build(conditional="projection", n_classes=10).eval()
    x, y = torch.randn(3, *shape), torch.tensor([1, 7, 7])
    with torch.no_grad():
        h = features(D, x)
        unconditional = D.judge(x, y)[0] - (D.head.embed(y) * h).sum(1)
        for other in (torch.tensor([0, 0, 0]), torch.tensor([9, 2, 5])):
            expected = unconditional + (D.head.embed(other) * h).sum(1)
            torch.testing.assert_close(D(x, other), expected, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(D(x, y), D(x, (y + 1) % 10))


def test_packed_projection_sums_the_embeddings_of_the_pack() -> None:
    D = mlp.Discriminator(hidden=8, depth=1, dim=2, pack=2, conditional="projection", n_classes=5)
    x, y = torch.randn(4, 2), torch.tensor([0, 3, 1, 1])
    with torch.no_grad():
        h = D.net[:-1](pack_samples(x, 2))
        e = D.head.embed(y)
        expected = D.net[-1](h).squeeze(1) + ((e[0::2] + e[1::2]) * h).sum(1)
        torch.testing.assert_close(D(x, y), expected)


@pytest.mark.parametrize("name", list(D_BUILDERS))
@pytest.mark.parametrize("pack", [1, 2])
def test_acgan_head_gives_class_logits_per_sample(name: str, pack: int) -> None:
    build, shape = D_BUILDERS[name]
    D = build(conditional="acgan", n_classes=10, pack=pack)
    logits, class_logits = D.judge(torch.randn(4, *shape))
    assert logits.shape == (4 // pack,) and class_logits.shape == (4, 10)
    # The adversarial logit ignores the label: ACGAN conditions D only through its classifier.
    x = torch.randn(4, *shape)
    D.eval()
    torch.testing.assert_close(D(x, torch.zeros(4, dtype=torch.long)), D(x))


@pytest.mark.parametrize("size", [28, 48, None])
def test_resnet_rejects_other_image_sizes_naming_the_key(size: int | None) -> None:
    with pytest.raises(ConfigError, match=rf"data\.image_size={size}.*\[32, 64\]"):
        resnet.Generator(image_size=size)
    with pytest.raises(ConfigError, match=rf"data\.image_size={size}"):
        resnet.Discriminator(image_size=size)


def test_resnet_matches_the_sngan_cifar_sizes() -> None:
    # Miyato et al. 2018's CIFAR-10 ResNet: about 4.3M parameters in G and 1.0M in D.
    G, D = resnet.Generator(), resnet.Discriminator()
    assert 4.2e6 < sum(p.numel() for p in G.parameters()) < 4.4e6
    assert 1.0e6 < sum(p.numel() for p in D.parameters()) < 1.1e6
    assert G(torch.randn(2, 128)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", list(D_BUILDERS))
def test_models_rebuild_from_init_args(name: str) -> None:
    build, _ = D_BUILDERS[name]
    D = build(spectral_norm=True, pack=2, conditional="projection", n_classes=10)
    clone = type(D)(**D.init_args)
    clone.load_state_dict(D.state_dict())  # strict: same parametrizations, heads and buffers


@pytest.mark.parametrize("name", list(G_BUILDERS))
def test_generators_rebuild_from_init_args(name: str) -> None:
    G = G_BUILDERS[name](conditional="projection", n_classes=10)
    assert G.init_args["z_dim"] == 8 and G.init_args["n_classes"] == 10
    clone = type(G)(**G.init_args)
    clone.load_state_dict(G.state_dict())  # strict: same layers, conditional BatchNorms included


# --- the papers' networks: maxout, BatchNorm MLP generator, initialisations ----------------------
def test_maxout_takes_the_max_over_each_group_of_consecutive_pieces() -> None:
    layer = Maxout(3, 4, pieces=5)
    x = torch.randn(6, 3)
    out = layer(x)
    assert out.shape == (6, 4) and layer.linear.out_features == 20
    pre = layer.linear(x)  # unit j owns pieces 5j..5j+4, blocks' and pylearn2's layout
    for j in range(4):
        torch.testing.assert_close(out[:, j], pre[:, 5 * j : 5 * j + 5].max(dim=1).values)


def test_maxout_discriminator_has_the_pacgan_shape() -> None:
    D = mlp.Discriminator(hidden=200, depth=3, dim=2, pack=4, activation="maxout", pieces=5)
    maxouts = [m for m in D.net if isinstance(m, Maxout)]
    assert [(m.linear.in_features, m.linear.out_features) for m in maxouts] == [
        (8, 1000),
        (200, 1000),
        (200, 1000),
    ]
    assert not any(isinstance(m, nn.LeakyReLU) for m in D.modules())
    assert D.net[-1].in_features == 200 and D(torch.randn(12, 2)).shape == (3,)


def test_maxout_discriminator_drops_inputs_and_hidden_units() -> None:
    D = mlp.Discriminator(
        hidden=8, depth=2, dim=4, activation="maxout", input_dropout=0.2, dropout=0.5
    )
    drops = [m.p for m in D.net if isinstance(m, nn.Dropout)]
    assert drops == [0.2, 0.5, 0.5] and isinstance(D.net[0], nn.Dropout)


def test_batchnorm_generator_is_linear_batchnorm_relu_without_bias() -> None:
    G = mlp.Generator(
        z_dim=2, hidden=400, depth=4, dim=2, norm="batch", bias=False, bn_momentum=0.05
    )
    kinds = [type(m) for m in G.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 4 + [nn.Linear]
    hidden = [m for m in G.net if isinstance(m, nn.Linear)][:-1]
    assert all(m.bias is None for m in hidden) and G.net[-1].bias is not None
    assert all(m.momentum == 0.05 for m in G.net if isinstance(m, nn.BatchNorm1d))
    G.train()
    out = G(torch.randn(64, 2))
    # Training mode normalises each hidden layer over the batch: zero mean before the ReLU.
    h = G.net[:2](torch.randn(64, 2))
    assert out.shape == (64, 2) and h.mean(0).abs().max() < 1e-5
    G.eval()  # inference uses running statistics: one sample alone is well defined
    assert G(torch.randn(1, 2)).shape == (1, 2)


def test_batchnorm_generator_with_bias_keeps_it() -> None:
    G = mlp.Generator(z_dim=2, hidden=8, depth=2, dim=2, norm="batch")
    assert all(m.bias is not None for m in G.net if isinstance(m, nn.Linear))


def test_plain_mlp_layouts_are_unchanged() -> None:
    """Checkpoints written before the new options still load: same state-dict keys."""
    G = mlp.Generator(z_dim=2, hidden=8, depth=2, dim=2)
    D = mlp.Discriminator(hidden=8, depth=2, dim=2)
    assert list(G.state_dict()) == [f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    assert list(D.state_dict()) == [f"net.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]


@pytest.mark.parametrize("init", ["normal", "uniform"])
def test_paper_initialisations(init: str) -> None:
    torch.manual_seed(0)
    G = mlp.Generator(
        z_dim=64, hidden=400, depth=2, dim=2, norm="batch", init=init, init_scale=0.02
    )
    D = mlp.Discriminator(
        hidden=200, depth=2, dim=2, activation="maxout", init=init, init_scale=0.02
    )
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, nn.Linear):
                w = m.weight.detach()
                if init == "normal":
                    assert w.mean().abs() < 2e-3 and w.std().item() == pytest.approx(0.02, rel=0.1)
                else:
                    assert w.abs().max() <= 0.02 and w.abs().max() > 0.019
                assert m.bias is None or torch.count_nonzero(m.bias) == 0
            if isinstance(m, nn.BatchNorm1d):  # BatchNorm keeps its identity affine map
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_default_initialisation_is_torchs() -> None:
    torch.manual_seed(0)
    a = mlp.Discriminator(hidden=8, depth=1, dim=2)
    torch.manual_seed(0)
    b = mlp.Discriminator(hidden=8, depth=1, dim=2, init="default", init_scale=123.0)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_bad_paper_network_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.discriminator\.activation='tanh'"):
        mlp.Discriminator(dim=2, activation="tanh")
    with pytest.raises(ConfigError, match=r"model\.discriminator\.pieces=0"):
        mlp.Discriminator(dim=2, activation="maxout", pieces=0)
    with pytest.raises(ConfigError, match=r"model\.generator\.norm='layer'"):
        mlp.Generator(dim=2, norm="layer")
    with pytest.raises(ConfigError, match=r"model\.generator\.init='xavier'"):
        mlp.Generator(dim=2, init="xavier")
    with pytest.raises(ConfigError, match=r"model\.discriminator\.init_scale=0"):
        mlp.Discriminator(dim=2, init="normal", init_scale=0)
    with pytest.raises(ConfigError, match=r"model\.discriminator\.input_dropout=1"):
        mlp.Discriminator(dim=2, input_dropout=1.0)


def test_paper_networks_rebuild_from_init_args() -> None:
    G = mlp.Generator(z_dim=2, hidden=8, depth=2, dim=2, norm="batch", bias=False, init="normal")
    D = mlp.Discriminator(
        hidden=8, depth=2, dim=2, activation="maxout", pieces=3, input_dropout=0.2
    )
    for net in (G, D):
        clone = type(net)(**net.init_args)
        clone.load_state_dict(net.state_dict())  # strict: BatchNorm buffers, maxout pieces
        assert clone.init_args == net.init_args


# --- the interface every generator and discriminator has (models/protocols.py) --------------------
@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
@pytest.mark.parametrize("name", list(G_BUILDERS))
def test_every_generator_has_the_interface_and_draws_its_output_kind(
    name: str, conditional: str
) -> None:
    kw = {} if conditional == "none" else {"conditional": conditional, "n_classes": 3}
    G = G_BUILDERS[name](**kw)
    protocols.check_generator(G)
    assert isinstance(G, protocols.Generator)
    y = None if conditional == "none" else torch.arange(4) % 3
    x = G(torch.randn(4, G.z_dim)) if y is None else G(torch.randn(4, G.z_dim), y)
    # The declared kind is what comes out: (N, C, H, W) images or (N, D) vectors.
    assert protocols.is_image(G) == (x.dim() == 4) == (not name.startswith("mlp"))


@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
@pytest.mark.parametrize("name", list(D_BUILDERS))
def test_every_discriminator_has_the_interface(name: str, conditional: str) -> None:
    kw = {} if conditional == "none" else {"conditional": conditional, "n_classes": 3}
    D = D_BUILDERS[name][0](pack=2, **kw)
    protocols.check_discriminator(D)
    assert isinstance(D, protocols.Discriminator) and D.pack == 2


def test_an_image_mlp_generator_declares_images() -> None:
    G = mlp.Generator(z_dim=4, hidden=8, depth=1, channels=1, image_size=8)
    assert G.output_kind == "image" and G(torch.randn(2, 4)).shape == (2, 1, 8, 8)


class Bare(nn.Module):
    """A module with none of the interface; tests add members one at a time."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({}, r"model\.generator \(test_models\.Bare\) needs an attribute z_dim"),
        ({"z_dim": 4}, r"needs an attribute n_classes"),
        ({"z_dim": 4, "n_classes": None}, r"needs an attribute output_kind.*'image', 'vector'"),
        (
            {"z_dim": 4, "n_classes": None, "output_kind": "points"},
            r"output_kind.*got 'points'",
        ),
        ({"z_dim": 4, "n_classes": 1, "output_kind": "image"}, r"n_classes=1 must be None"),
        (
            {"z_dim": 4, "n_classes": None, "output_kind": "image"},
            r"forward must take \(z, y=None\)",
        ),
    ],
)
def test_a_generator_lacking_a_member_is_named(members: dict, message: str) -> None:
    G = Bare()
    for key, value in members.items():
        setattr(G, key, value)
    with pytest.raises(ConfigError, match=message):
        protocols.check_generator(G)


def test_a_model_without_init_args_is_told_how_to_record_them() -> None:
    class NoRecord(nn.Module):
        z_dim, n_classes, output_kind = 4, None, "vector"

        def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return z

    with pytest.raises(ConfigError, match=r"no init_args.*records_init_args"):
        protocols.check_generator(NoRecord())
    with pytest.raises(ConfigError, match=r"is a str, not a torch\.nn\.Module"):
        protocols.check_generator("dcgan")


def test_a_discriminator_lacking_a_member_is_named() -> None:
    D = Bare()
    with pytest.raises(ConfigError, match=r"model\.discriminator .*needs an attribute pack"):
        protocols.check_discriminator(D)
    D.pack = 1
    with pytest.raises(ConfigError, match=r"needs an attribute conditional"):
        protocols.check_discriminator(D)
    acgan = D_BUILDERS["mlp"][0](conditional="acgan", n_classes=3)
    acgan.judge = None
    with pytest.raises(ConfigError, match=r"conditional=acgan\) but has no judge"):
        protocols.check_discriminator(acgan)


def test_check_models_matches_the_generator_to_the_data_and_d() -> None:
    G, D = G_BUILDERS["mlp"](), D_BUILDERS["mlp"][0]()
    protocols.check_models(G, D, image=False, data="toy_ring")
    with pytest.raises(ConfigError, match=r"draws vectors but data=mnist5k holds images"):
        protocols.check_models(G, D, image=True, data="mnist5k")
    D_cond = D_BUILDERS["mlp"][0](conditional="projection", n_classes=3)
    with pytest.raises(ConfigError, match=r"n_classes=None .*conditional=projection"):
        protocols.check_models(G, D_cond, image=False)
