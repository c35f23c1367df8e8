"""The fast Inception path's rewrites, each against what it replaces (no weights file needed;
test_inception checks the whole network against torch-fidelity's forward)."""

from __future__ import annotations

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ganforge.metrics import inception_fast
from ganforge.metrics.inception_fast import FusedConvReLU, fuse_inception, resize_tf1_bilinear

SHAPES = [(2, 3, 32, 32), (1, 3, 41, 57), (1, 3, 299, 299), (1, 1, 512, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_resize_gives_torch_fidelitys_values_bit_for_bit(shape: tuple[int, ...]) -> None:
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0)).float()
    theirs = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_tf1_bilinear(x, (299, 299)), theirs)


def random_block(stride: int = 1) -> BasicConv2d:
    g = torch.Generator().manual_seed(1)
    block = BasicConv2d(8, 16, kernel_size=3, stride=stride, padding=1)
    with torch.no_grad():
        block.conv.weight.normal_(generator=g)
        block.bn.weight.uniform_(0.5, 2.0, generator=g)
        block.bn.bias.normal_(generator=g)
        block.bn.running_mean.normal_(generator=g)
        block.bn.running_var.uniform_(0.5, 2.0, generator=g)
    return block.eval()


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_block_equals_conv_bn_relu(monkeypatch, onednn: bool, stride: int) -> None:
    if not onednn:  # the portable path (GPU, or torch without oneDNN)
        monkeypatch.setattr(inception_fast, "_has_onednn_ops", lambda: False)
    block = random_block(stride)
    fused = FusedConvReLU(block)
    assert fused._onednn == (onednn and inception_fast._has_onednn_ops())
    x = torch.randn(3, 8, 13, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x.clone())
        for batch in (x, x[:1]):  # weights packed for one batch size serve another
            out = fused(batch)
            scale = expected.abs().max()
            assert (out - expected[: len(batch)]).abs().max() <= 1e-5 * scale
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU did something


def test_fusing_leaves_the_original_network_untouched() -> None:
    net = torch.nn.Sequential(random_block(), torch.nn.Sequential(random_block()))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse_inception(net)
    assert isinstance(net[0], BasicConv2d) and isinstance(net[1][0], BasicConv2d)
    assert isinstance(fused[0], FusedConvReLU) and isinstance(fused[1][0], FusedConvReLU)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
