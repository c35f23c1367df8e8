"""model=r3gan (models/r3gan.py, r3gan_layers.py): shapes at every size, conditioning, the fix-up
init, the [1,3,3,1] resampler against hand-computed values, packing, and runs through train,
sample and eval."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from fakes import data_overrides
from ganforge import checkpoint as ckpt_mod
from ganforge.errors import ConfigError
from ganforge.metrics.weights import default_weights_path
from ganforge.models import r3gan
from ganforge.models.r3gan_layers import LRELU_GAIN, ResidualBlock, downsample, upsample
from ganforge.train import config_dir, train

SMALL = {"width": 16, "blocks": 1}


def nets(size: int, channels: int, **kw) -> tuple[r3gan.Generator, r3gan.Discriminator]:
    d_only = {k: kw.pop(k) for k in ["pack"] if k in kw}
    args = {"channels": channels, "image_size": size, **SMALL, **kw}
    return r3gan.Generator(**args), r3gan.Discriminator(**args, **d_only)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_size(size: int, channels: int) -> None:
    G, D = nets(size, channels)
    x = G(torch.randn(5, G.z_dim))
    assert x.shape == (5, channels, size, size)
    assert D(x).shape == (5,)


def test_stages_and_basis_per_size() -> None:
    for size, (side, n_stages) in r3gan.SIZES.items():
        G, D = nets(size, 1)
        assert G.basis.shape == (16, side, side) and len(G.stages) == n_stages
        assert D.basis.kernel_size == (side, side) and D.basis.groups == 16


def test_stage_widths_are_per_stage_and_reversed_in_d() -> None:
    G, D = nets(32, 3, stage_widths="64 64,32 16")
    assert [s[-1].conv3.out_channels for s in G.stages] == [64, 64, 32, 16]
    assert [s[0].conv3.out_channels for s in D.stages] == [16, 32, 64, 64]
    assert G(torch.randn(2, 64)).shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"model\.stage_widths=.*4 positive integers"):
        nets(32, 3, stage_widths="64 64 32")
    with pytest.raises(ConfigError, match=r"model\.group_size=16 .* width 4"):
        nets(28, 1, stage_widths="16 16 4")
    with pytest.raises(ConfigError, match=r"data\.image_size=48"):
        nets(48, 1)
    with pytest.raises(ConfigError, match=r"model\.blocks=0"):
        nets(28, 1, blocks=0)


def test_block_is_the_authors_bottleneck() -> None:
    block = ResidualBlock(32, expansion=2, group_size=16, n_blocks=4)
    assert (block.conv1.in_channels, block.conv1.out_channels, block.conv1.kernel_size) == (
        32,
        64,
        (1, 1),
    )
    assert block.conv2.kernel_size == (3, 3) and block.conv2.groups == 64 // 16
    assert (block.conv3.in_channels, block.conv3.out_channels) == (64, 32)
    assert all(c.bias is None for c in (block.conv1, block.conv2, block.conv3))
    G, D = nets(32, 3)
    for net in (G, D):
        kinds = {type(m) for m in net.modules()}
        assert not any(issubclass(k, nn_norm) for k in kinds for nn_norm in NORMS)


NORMS = (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.InstanceNorm2d)


def test_every_block_is_the_identity_at_init() -> None:
    G, D = nets(32, 3, blocks=2)
    blocks = [m for net in (G, D) for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 * 2 * 4
    x = torch.randn(2, 16, 8, 8)
    for block in blocks:
        assert torch.count_nonzero(block.conv3.weight) == 0
        assert torch.equal(block(x), x)


def test_fixup_variance_rule() -> None:
    # Wide layers so the empirical std is within 2 % of the rule's.
    torch.manual_seed(0)
    width, blocks = 256, 4
    G = r3gan.Generator(channels=3, image_size=32, width=width, blocks=blocks, group_size=16)
    n_blocks = blocks * 4  # L: every block of the network
    block = G.stages[1][1]
    assert isinstance(block, ResidualBlock)
    scale = n_blocks ** (-1 / 4)
    expect1 = LRELU_GAIN * scale / math.sqrt(width)  # conv1: 1x1, fan-in = width
    expect2 = LRELU_GAIN * scale / math.sqrt(16 * 9)  # conv2: 3x3 over a group of 16
    assert block.conv1.weight.std().item() == pytest.approx(expect1, rel=0.02)
    assert block.conv2.weight.std().item() == pytest.approx(expect2, rel=0.02)
    # The same init with L = 1 would be L^(1/4) = 2x larger: the scale factor is what is tested.
    assert block.conv1.weight.std().item() != pytest.approx(expect1 / scale, rel=0.2)
    assert G.out.weight.std().item() == pytest.approx(1 / math.sqrt(width), rel=0.1)


def test_generator_has_no_tanh() -> None:
    torch.manual_seed(0)
    G, _ = nets(28, 1)
    for block in (m for m in G.modules() if isinstance(m, ResidualBlock)):
        torch.nn.init.normal_(block.conv3.weight, 0.0, 0.5)
    x = G(torch.randn(16, G.z_dim))
    assert x.abs().max() > 1.5
    assert not any(isinstance(m, torch.nn.Tanh) for m in G.modules())


def test_upsample_and_downsample_match_hand_computed_values() -> None:
    # A unit impulse at (0, 0). Up: out[2i] = (x[i-1] + 3x[i]) / 4, out[2i+1] = (3x[i] + x[i+1]) / 4
    # per axis, zero outside, so one axis reads [3/4, 3/4, 1/4, 0]; the 2-D result is the outer
    # product.
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1
    row = torch.tensor([3 / 4, 3 / 4, 1 / 4, 0])
    torch.testing.assert_close(upsample(x)[0, 0], torch.outer(row, row))
    # Down: out[o] = (x[2o-1] + 3x[2o] + 3x[2o+1] + x[2o+2]) / 8 per axis.
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1
    torch.testing.assert_close(downsample(x)[0, 0], torch.tensor([[9 / 64, 0], [0, 0]]))
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # (0, 1) row: rows 0..2 weights (3, 3, 1)/8, cols 1..4 weights (1, 3, 3, 1)/8, col 4 is 0.
    rows, cols = torch.tensor([3.0, 3, 1, 0]) / 8, torch.tensor([0.0, 1, 3, 3]) / 8
    expect = rows @ x[0, 0] @ cols
    torch.testing.assert_close(downsample(x)[0, 0, 0, 1], expect)
    # Channels are filtered separately, and a constant stays constant away from the border.
    x = torch.ones(2, 3, 8, 8) * torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(upsample(x)[inner], x.repeat(1, 1, 2, 2)[inner])
    torch.testing.assert_close(downsample(x)[:, :, 1:-1, 1:-1], x[:, :, :2, :2])


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_conditional_nets_read_the_label(conditional: str) -> None:
    torch.manual_seed(0)
    G, D = nets(32, 3, conditional=conditional, n_classes=10)
    z = torch.randn(4, G.z_dim)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    x0, x1 = G(z, y0), G(z, y1)
    assert x0.shape == (4, 3, 32, 32) and not torch.allclose(x0, x1)
    logits, class_logits = D.judge(x0, y0)
    assert logits.shape == (4,)
    if conditional == "projection":
        assert class_logits is None and not torch.allclose(D(x0, y0), D(x0, y1))
        # The authors' projection: D's last linear layer is as wide as its last stage.
        assert D.linear.out_features == D.basis.out_channels == D.embed.embedding_dim
    else:
        assert class_logits.shape == (4, 10)
    with pytest.raises(ValueError, match="labels"):
        G(z)


def test_packing() -> None:
    torch.manual_seed(0)
    G, D = nets(28, 1, pack=4, conditional="projection", n_classes=10)
    assert D.input.in_channels == 4
    y = torch.randint(0, 10, (8,))
    x = G(torch.randn(8, G.z_dim), y)
    assert D(x, y).shape == (2,)
    # A pack is one input: changing one sample changes its pack's logit only.
    x2 = x.clone()
    x2[5] += 1
    out, out2 = D(x, y), D(x2, y)
    assert out[0] == out2[0] and out[1] != out2[1]
    with pytest.raises(ConfigError, match=r"model\.pack=4"):
        D(x[:6], y[:6])


def test_checkpoint_record_is_plain_data() -> None:
    G, D = nets(28, 1, stage_widths="16 16 16")
    for net in (G, D):
        args = ckpt_mod.describe_network(net)["init_args"]
        assert args["stage_widths"] == "16 16 16"
        assert all(v is None or isinstance(v, (int, float, str, bool)) for v in args.values())


# --- runs ---------------------------------------------------------------------------------------
TINY = ["model.width=16", "model.blocks=1", "data.batch_size=8"]


def test_fast_dev_run_on_mnist5k(tmp_path: Path) -> None:
    overrides = ["model=r3gan", "debug=fast_dev_run", *TINY, "model.stage_widths='16 16 16'"]
    cfg = compose_train(tmp_path, *overrides, *data_overrides("mnist5k", tmp_path))
    assert cfg.model.generator.stage_widths == "16 16 16"
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


def test_fast_dev_run_conditional_packed_with_r1(tmp_path: Path) -> None:
    overrides = [
        "model=r3gan",
        "debug=fast_dev_run",
        *TINY,
        "model.conditional=projection",
        "model.pack=2",
        "system.r1_gamma=0.1",
    ]
    cfg = compose_train(tmp_path, *overrides, *data_overrides("mnist5k", tmp_path))
    metrics = train(cfg)
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


def test_fast_dev_run_with_rpgan_r1_r2(tmp_path: Path) -> None:
    overrides = [
        "model=r3gan",
        "loss=rpgan",
        "debug=fast_dev_run",
        *TINY,
        "system.r1_gamma=0.05",
        "system.r2_gamma=0.05",
    ]
    cfg = compose_train(tmp_path, *overrides, *data_overrides("mnist5k", tmp_path))
    metrics = train(cfg)
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])
    # Both penalties ran through the double backward of r3gan's resamplers.
    assert metrics["train/r1"] > 0 and metrics["train/r2"] > 0


@pytest.fixture(scope="module")
def r3gan_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("r3gan_run")
    overrides = ["model=r3gan", "debug=smoke", *TINY]
    train(compose_train(out, *overrides, *data_overrides("mnist5k", out)))
    return out / "checkpoints" / "last.ckpt"


def test_checkpoint_loads_in_sample(r3gan_ckpt: Path, tmp_path: Path) -> None:
    from ganforge.sample import sample

    G, _, used_ema = ckpt_mod.load_generator(r3gan_ckpt, ema=True)
    assert isinstance(G, r3gan.Generator) and G.init_args["width"] == 16 and used_ema
    cfg = OmegaConf.load(config_dir() / "sample.yaml")
    del cfg["defaults"], cfg["hydra"]
    cfg.ckpt, cfg.out, cfg.n = str(r3gan_ckpt), str(tmp_path / "grid.png"), 4
    assert Path(sample(cfg)).is_file()


needs_weights = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="run ganforge-fetch-inception first"
)


@needs_weights
@pytest.mark.slow
def test_checkpoint_loads_in_eval(r3gan_ckpt: Path, tmp_path: Path) -> None:
    from ganforge import eval as eval_mod

    cfg = OmegaConf.load(config_dir() / "eval.yaml")
    del cfg["defaults"], cfg["hydra"]
    cfg.metrics = OmegaConf.load(config_dir() / "metrics" / "default.yaml")
    cfg.paths = {"data_dir": str(r3gan_ckpt.parents[1] / "data")}
    cfg.ckpt, cfg.out = str(r3gan_ckpt), str(tmp_path / "eval.json")
    cfg.metrics.n_samples = cfg.metrics.reference_count = 24
    cfg.metrics.batch_size = 12
    cfg.metrics.cache_dir = str(tmp_path / "cache")
    report = eval_mod.evaluate_checkpoint(cfg)
    assert report["generator"] == "ema" and report["protocol"]["reference_dataset"] == "mnist5k"
    assert report["metrics"]["fid"] > 0


def test_bf16_autocast_with_double_backprop() -> None:
    # trainer.precision=bf16-mixed runs the nets under autocast; R1/R2 differentiate through it.
    G, D = nets(28, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(torch.randn(4, G.z_dim)).detach().float().requires_grad_(True)
        logits = D(x)
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    assert logits.dtype == torch.bfloat16 and logits.shape == (4,)
    (grad.square().sum() + logits.float().sum()).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in D.parameters())
