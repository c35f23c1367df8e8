"""The building blocks of R3GAN's networks (Huang et al. 2024, "The GAN is dead; long live the
GAN!"), written from the authors' code (github brownvc/R3GAN, commit 19a7ddf); `R3GAN/...:N`
below is a file and line there.

- Weights start from N(0, (gain / sqrt(fan_in))^2), biases zero (`MSRInitializer`,
  R3GAN/Networks.py:7-14).
- Every nonlinearity is a learned per-channel bias followed by LeakyReLU(0.2)
  (`BiasedActivation`, R3GAN/FusedOperators.py:6-18); the convolutions themselves have no bias
  (Networks.py:20) and there is no normalisation layer anywhere.
- A residual block is x + conv1x1(act(conv3x3_grouped(act(conv1x1(x))))): C -> expansion*C ->
  expansion*C -> C (Networks.py:25-45; the presets use expansion 2, train.py:272, 278) with
  `expansion*C / group_size` groups in the 3x3 conv (CIFAR-10: 1536 channels in 96 groups = 16
  per group, train.py:179-181).
- Fix-up init (Networks.py:29-35): the two first convs of a block use gain
  sqrt(2 / (1 + 0.2^2)) * L^(-1/4) (LeakyReLU's gain times L^(-1/(2m-2)) with m = 3 layers per
  branch), L the number of blocks in the whole network (Networks.py:133, 155); the last conv of
  every branch starts at zero, so every block is the identity at init.
- Up- and down-sampling filter with the separable [1,3,3,1] kernel: the authors pass [1,2,1]
  (Networks.py:130) and `CreateLowpassKernel` convolves it with [1,1] (Resamplers.py:6-9);
  upsampling is a stride-2 transposed conv with the kernel times 4, downsampling a stride-2 conv,
  both padded by 1 (the reference forms, Resamplers.py:11-35, which match upfirdn2d's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# LeakyReLU(0.2)'s variance-preserving gain (FusedOperators.py:7).
LRELU_GAIN = math.sqrt(2 / (1 + 0.2**2))
# Linear layers per residual branch: the exponent of L is -1 / (2 * 3 - 2) (Networks.py:29-31).
BRANCH_LAYERS = 3
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def msr_init_(layer: nn.Conv2d | nn.Linear | nn.Embedding, gain: float) -> None:
    """N(0, (gain / sqrt(fan_in))^2), fan_in = inputs per output unit (Networks.py:7-14).
    An embedding is a bias-free linear map of a one-hot label: its fan-in is the class count."""
    weight = layer.weight
    fan_in = weight.shape[0] if isinstance(layer, nn.Embedding) else weight[0].numel()
    nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def conv(c_in: int, c_out: int, kernel: int, gain: float, groups: int = 1) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, groups=groups, bias=False)
    msr_init_(layer, gain)
    return layer


def block_gain(n_blocks: int) -> float:
    """The fix-up gain of a branch's first two convs when the network has `n_blocks` blocks."""
    return LRELU_GAIN * n_blocks ** (-1 / (2 * BRANCH_LAYERS - 2))


class BiasedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, expansion: int, group_size: int, n_blocks: int) -> None:
        super().__init__()
        wide, gain = width * expansion, block_gain(n_blocks)
        self.conv1 = conv(width, wide, 1, gain)
        self.act1 = BiasedLeakyReLU(wide)
        self.conv2 = conv(wide, wide, 3, gain, groups=wide // group_size)
        self.act2 = BiasedLeakyReLU(wide)
        # Zero gain: the branch adds nothing at init, so the block starts as the identity.
        self.conv3 = conv(wide, width, 1, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


def _fir(x: Tensor) -> Tensor:
    """The normalised 4x4 [1,3,3,1] x [1,3,3,1] kernel, one copy per channel of `x`."""
    taps = torch.tensor(FIR_TAPS, dtype=x.dtype, device=x.device)
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    return kernel.expand(x.shape[1], 1, 4, 4)


def upsample(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W): bilinear interpolation with zero padding outside."""
    return F.conv_transpose2d(x, 4 * _fir(x), stride=2, padding=1, groups=x.shape[1])


def downsample(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H/2, W/2): [1,3,3,1] low-pass filter, then every other pixel."""
    return F.conv2d(x, _fir(x), stride=2, padding=1, groups=x.shape[1])


class Upsample(nn.Module):
    """G's transition between stages: a 1x1 conv when the width changes, then upsampling
    (`UpsampleLayer`, Networks.py:47-60)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = conv(c_in, c_out, 1, 1.0) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        return upsample(x if self.conv is None else self.conv(x))


class Downsample(nn.Module):
    """D's transition: downsampling, then a 1x1 conv when the width changes (`DownsampleLayer`,
    Networks.py:62-75)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = conv(c_in, c_out, 1, 1.0) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        x = downsample(x)
        return x if self.conv is None else self.conv(x)
