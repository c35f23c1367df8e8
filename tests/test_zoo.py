"""The research zoo end to end: every experiment preset runs, and the GAN system routes labels,
DiffAugment, packing, the ACGAN loss, lr decay and EMA sampling the way the papers define them."""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONF, compose_train, quiet_trainer, toy_system
from fakes import data_overrides
from ganforge import system as system_module
from ganforge.errors import ConfigError
from ganforge.models import mlp
from ganforge.train import train

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# Shrink every model so a preset's fast_dev_run takes about a second.
TINY = {
    "mlp": [
        "model.z_dim=4",
        "model.generator.hidden=16",
        "model.generator.depth=1",
        "model.discriminator.hidden=16",
        "model.discriminator.depth=1",
    ],
    "dcgan": ["model.base_width=4"],
    "resnet": ["model.g_width=8", "model.d_width=8"],
    "r3gan": ["model.width=16", "model.blocks=1"],
    "unrolled_dcgan": [],  # the paper's own networks are this small (8-64 maps)
    "veegan_dcgan": ["model.g_width=4", "model.d_width=4"],
}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_runs_fast_dev_run(tmp_path: Path, preset: str) -> None:
    probe = compose_train(tmp_path, f"experiment={preset}")
    pack = probe.model.get("pack", 1)
    overrides = [
        f"experiment={preset}",
        "debug=fast_dev_run",
        f"data.batch_size={4 * pack}",
        *TINY[probe.model.name],
        *data_overrides(probe.data.name, tmp_path),
    ]
    if probe.data.name.startswith("toy"):
        overrides.append("data.n_samples=2000")
    cfg = compose_train(tmp_path, *overrides)
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "toy_ring"])
def test_paper_presets_cite_their_source_and_number(preset: str) -> None:
    """The header (the comment block a user reads first) names the paper by authors and year and
    states, under a label, the number to expect or the one measured here, or says there is none
    (a word like "numbers" anywhere in the file does not count)."""
    lines = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()
    header = "\n".join(itertools.takewhile(lambda line: line.startswith("#"), lines))
    # Authors and year: "Lin et al. 2018", "Miyato & Koyama 2018", "Huang, Gokaslan, ... 2024".
    assert re.search(r"(et al\.|& \w+|\w+, \w+) (19|20)\d\d", header), preset
    label = re.search(r"\b(Numbers? to expect|Paper number|Measured number|Measured \()", header)
    assert label, f"{preset}: no 'Number to expect:' (or 'Paper number:', 'Measured') line"
    # The labelled statement (to the end of its paragraph) gives a value or says "none".
    statement = re.split(r"\n#\s*\n", header[label.start() :])[0]
    assert re.search(r"\d|\bnone\b", statement), f"{preset}: {statement!r}"


def test_paper_hyperparameters_reach_the_system(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=sngan_cifar10")
    assert cfg.model.name == "resnet" and cfg.loss.name == "hinge"
    assert cfg.system.n_critic == 5 and list(cfg.optim.betas) == [0.0, 0.9]
    assert cfg.system.lr_decay == "linear" and cfg.system.discriminator.spectral_norm
    cfg = compose_train(tmp_path, "experiment=projection_cifar10")
    assert cfg.system.discriminator.conditional == "projection"
    assert cfg.system.generator.n_classes == 10
    cfg = compose_train(tmp_path, "experiment=pacgan_grid")
    assert cfg.system.discriminator.pack * 100 == cfg.data.batch_size


# --- labels --------------------------------------------------------------------------------------
def conditional_toy_system(conditional: str = "projection", **kwargs):
    G = mlp.Generator(z_dim=8, hidden=32, depth=2, dim=2, conditional=conditional, n_classes=8)
    D = mlp.Discriminator(hidden=32, depth=2, dim=2, conditional=conditional, n_classes=8)
    return toy_system(generator=G, discriminator=D, **kwargs)


def spy_calls(obj: object, attr: str = "forward") -> list[tuple]:
    """Record (*args, result) of every call to obj.attr."""
    calls: list[tuple] = []
    original = getattr(obj, attr)

    def spy(*args):
        out = original(*args)
        calls.append((*args, out))
        return out

    setattr(obj, attr, spy)
    return calls


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_system_routes_real_labels_with_reals_and_sampled_labels_with_fakes(
    conditional: str,
) -> None:
    system, dm = conditional_toy_system(conditional, max_iters=1)
    g_calls = spy_calls(system.G)
    d_calls = spy_calls(system.D, "judge" if conditional == "acgan" else "forward")
    quiet_trainer().fit(system, dm)
    (real, y_real, _), (d_fake, y_d_fake, _), (g_fake, y_g_fake, _) = d_calls
    # Each real point lies on the ring mode of its own label.
    assert (real - dm.modes[y_real]).norm(dim=1).max() < 0.2
    # D judges exactly what G drew, with the label G drew it for, in both steps.
    (_, y_drawn_d, fake_d), (_, y_drawn_g, fake_g) = g_calls
    assert torch.equal(d_fake, fake_d) and torch.equal(y_d_fake, y_drawn_d)
    assert torch.equal(g_fake, fake_g) and torch.equal(y_g_fake, y_drawn_g)
    # Fakes get uniformly sampled labels, not the real batch's.
    assert not torch.equal(y_d_fake, y_real) and set(y_d_fake.tolist()) <= set(range(8))


def test_acgan_classifies_real_labels_for_d_and_sampled_labels_for_g() -> None:
    system, dm = conditional_toy_system("acgan", max_iters=1, aux_weight=0.5)
    batches = spy_calls(system, "training_step")
    aux = spy_calls(system, "_aux_loss")
    g_calls = spy_calls(system.G)
    quiet_trainer().fit(system, dm)
    (d_logits, d_y, _), (g_logits, g_y, _) = aux
    assert torch.equal(d_y, batches[0][0]["label"])  # D: cross-entropy on the real labels
    assert torch.equal(g_y, g_calls[-1][1])  # G: on the labels it was asked to draw
    assert d_logits.shape == g_logits.shape == (32, 8)
    loss = system._aux_loss(d_logits, d_y)
    torch.testing.assert_close(loss, 0.5 * torch.nn.functional.cross_entropy(d_logits, d_y))


def test_fixed_noise_has_one_row_per_class_and_generate_uses_the_labels() -> None:
    system, _ = conditional_toy_system(n_fixed=20)
    columns = 3  # ceil(20 / 8)
    assert torch.equal(system.fixed_y, torch.arange(8).repeat_interleave(columns))
    z = system.fixed_z.view(8, columns, -1)
    assert torch.equal(z, z[:1].expand_as(z))  # a column shares its z across classes
    assert "fixed_y" in system.state_dict()
    y = torch.arange(8)
    out = system.generate(system.fixed_z[:8], y, ema=False)
    system.G.eval()
    torch.testing.assert_close(out, system.G(system.fixed_z[:8], y))
    assert system.generate(system.fixed_z).shape == (24, 2)  # y=None: uniformly drawn labels


def test_conditional_grid_has_one_row_per_class(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        "debug=smoke",
        "train.max_iters=2",
        "model.base_width=4",
        "model.conditional=projection",
    )
    train(cfg)
    grid = Image.open(tmp_path / "samples" / "iter_0000002.png")
    assert grid.size == (7 * 30 + 2, 10 * 30 + 2)  # 64 fixed samples -> 10 rows of 7 columns
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ganforge"]["conditional"] == "projection"
    init_args = ckpt["ganforge"]["generator"]["init_args"]
    assert init_args["conditional"] == "projection" and init_args["n_classes"] == 10


def test_conditional_model_needs_a_labelled_dataset(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        "data=image_folder",
        *data_overrides("image_folder", tmp_path),
        "model.conditional=projection",
        "debug=fast_dev_run",
    )
    with pytest.raises(ConfigError, match=r"labelled dataset.*data\.n_classes.*data\.labels"):
        train(cfg)


def test_unconditional_system_calls_models_without_labels() -> None:
    system, dm = toy_system(max_iters=1)
    d_calls, g_calls = spy_calls(system.D), spy_calls(system.G)
    quiet_trainer().fit(system, dm)
    assert all(len(c) == 2 for c in d_calls + g_calls)  # (x, result): no labels
    assert system.fixed_y is None and "fixed_y" not in system.state_dict()


# --- packing, augmentation, decay, EMA -----------------------------------------------------------
def test_batch_not_divisible_by_pack_fails_before_training(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=toy_ring", "model=mlp", "model.pack=4", "data.batch_size=6")
    with pytest.raises(ConfigError, match=r"data\.batch_size=6 .*model\.pack=4"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_diffaugment_augments_reals_and_fakes_in_both_updates(monkeypatch) -> None:
    calls: list[bool] = []

    def recording(x, policy, generator=None):
        calls.append(x.requires_grad)  # fakes carry G's graph in the G step only
        return x

    monkeypatch.setattr(system_module, "diff_augment", recording)
    system, dm = toy_system(max_iters=1, diffaugment="color")
    quiet_trainer().fit(system, dm)
    # D step: real, fake (no grad to G); G step: fake, through which G's gradient flows.
    assert calls == [False, False, True]


def test_diffaugment_on_points_is_a_config_error() -> None:
    system, dm = toy_system(max_iters=1, diffaugment="translation")
    with pytest.raises(ConfigError, match=r"system\.diffaugment=translation"):
        quiet_trainer().fit(system, dm)


def test_linear_decay_reaches_zero_at_max_iters() -> None:
    opt_g = functools.partial(torch.optim.Adam, lr=1e-3)
    opt_d = functools.partial(torch.optim.Adam, lr=4e-3)  # two time-scales
    system, dm = toy_system(
        max_iters=6, lr_decay="linear", decay_start=2, g_optimizer=opt_g, d_optimizer=opt_d
    )
    used: list[tuple[float, float]] = []
    step = system._step_lr_decay

    def record_then_step() -> None:
        g, d = system.optimizers()
        used.append((g.param_groups[0]["lr"], d.param_groups[0]["lr"]))
        step()

    system._step_lr_decay = record_then_step
    quiet_trainer().fit(system, dm)
    factors = [1, 1, 1, 0.75, 0.5, 0.25]  # iterations 1..6; the decay starts after iteration 2
    expected = [lr * f for f in factors for lr in (1e-3, 4e-3)]
    assert [lr for pair in used for lr in pair] == pytest.approx(expected)
    assert [o.param_groups[0]["lr"] for o in system.optimizers()] == [0.0, 0.0]


def test_linear_decay_needs_max_iters() -> None:
    with pytest.raises(ConfigError, match=r"optim\.decay=linear.*train\.max_iters"):
        toy_system(max_iters=None, lr_decay="linear")


def test_decay_state_is_in_the_checkpoint(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=toy_ring", "model=mlp", "debug=smoke", "optim.decay=linear")
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert [s["last_epoch"] for s in ckpt["lr_schedulers"]] == [4, 4]


def test_sampling_defaults_to_the_ema_generator() -> None:
    system, dm = toy_system(max_iters=3, ema_decay=0.5)
    quiet_trainer().fit(system, dm)
    z = torch.randn(16, system.z_dim)
    system.G_ema.eval()
    system.G.eval()
    torch.testing.assert_close(system.generate(z), system.G_ema(z))
    assert not torch.allclose(system.generate(z), system.G(z))
    torch.testing.assert_close(system.generate(z, ema=False), system.G(z))


# --- faithful paper presets ----------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["pacgan_grid", "pacgan_ring"])
def test_pacgan_presets_build_the_authors_networks(tmp_path: Path, preset: str) -> None:
    from hydra.utils import instantiate

    from ganforge.models.layers import Maxout

    cfg = compose_train(tmp_path, f"experiment={preset}")
    G, D = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert [type(m) for m in G.net] == [
        torch.nn.Linear,
        torch.nn.BatchNorm1d,
        torch.nn.ReLU,
    ] * 4 + [torch.nn.Linear]
    assert G.net[0].in_features == 2 and G.net[0].out_features == 400 and G.net[0].bias is None
    assert [m.pieces for m in D.net if isinstance(m, Maxout)] == [5, 5, 5]
    assert D.net[-1].in_features == 200 and D.pack * 100 == cfg.data.batch_size
    assert cfg.system.ema_decay is None  # the paper has no generator EMA
    assert cfg.callbacks.evaluation.evaluator.n_samples == cfg.paper.protocol.n_samples == 2500
    assert list(cfg.optim.betas) == [0.8, 0.999] and cfg.optim.lr_g == cfg.optim.lr_d == 1e-4


def test_gan_mnist_preset_builds_the_maxout_discriminator(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from ganforge.models.layers import Maxout

    cfg = compose_train(tmp_path, "experiment=gan_mnist")
    D = instantiate(cfg.model.discriminator)
    maxouts = [m for m in D.net if isinstance(m, Maxout)]
    assert [(m.linear.out_features, m.pieces) for m in maxouts] == [(1200, 5), (1200, 5)]
    assert [m.p for m in D.net if isinstance(m, torch.nn.Dropout)] == [0.2, 0.5, 0.5]
    assert D.net[0].p == 0.2 and maxouts[0].linear.weight.abs().max() <= 0.005
    assert cfg.system.ema_decay is None and cfg.optim.momentum == 0.5
