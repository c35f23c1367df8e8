"""The ResNet G and D of SNGAN (Miyato et al. 2018, appendix B.4; Miyato & Koyama 2018) for 32 and
64 px images.

32 px (CIFAR-10): G maps z through a linear layer to 4x4x`width`, three up-blocks of `width`
channels, then BN-ReLU-conv3x3-tanh; D is an "optimized" down-block, a down-block and two plain
blocks of `width` channels, ReLU, global sum pooling and a linear layer.
64 px: the widths scale as in the SNGAN-64 / projection code: G 4w, 2w, w, w/2, w/4 over four
up-blocks; D w/2, w, 2w, 4w (each halving the size) and a last 8w block.
The defaults g_width=256, d_width=128 are the paper's CIFAR-10 widths; at 64 px they give the
SNGAN-64 widths (G 1024 -> 64, D 64 -> 1024).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.models.layers import (
    ConditionalHead,
    batch_norm,
    call,
    check_conditional,
    check_pack,
    pack_samples,
    records_init_args,
    require_labels,
    spectral_norm_,
)
from ganforge.models.protocols import OutputKind

SIZES = (32, 64)


def _check(image_size: int, width: int, key: str, divisor: int) -> None:
    if image_size not in SIZES:
        raise ConfigError(
            f"data.image_size={image_size} but model resnet supports {list(SIZES)}; pick one "
            "with data.image_size=... (e.g. data=cifar10) or use model=dcgan for 28 px"
        )
    if image_size == 64 and width % divisor:
        raise ConfigError(f"{key}={width} must be divisible by {divisor} at 64 px")


def _conv(c_in: int, c_out: int, kernel: int, gain: float) -> nn.Conv2d:
    # Xavier-uniform init as in the SNGAN code: gain sqrt(2) inside residual paths (ReLU),
    # 1 on shortcuts and the ends of the network.
    conv = nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3, plus up-conv1 on the shortcut; BN is conditional in a
    conditional G."""

    takes_label = True

    def __init__(self, c_in: int, c_out: int, n_classes: int | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = batch_norm(c_in, n_classes), _conv(c_in, c_out, 3, math.sqrt(2))
        self.bn2, self.conv2 = batch_norm(c_out, n_classes), _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.conv1(_up(F.relu(call(self.bn1, x, y))))
        h = self.conv2(F.relu(call(self.bn2, h, y)))
        return h + self.shortcut(_up(x))


class DBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3 (then 2x2 average pooling when `down`), with a conv1 shortcut
    whenever the shape changes. `first`: the "optimized" input block, which has no leading ReLU
    (the input is an image) and pools before its shortcut conv."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _conv(c_in, c_out, 3, math.sqrt(2))
        self.conv2 = _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0) if (down or c_in != c_out) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        skip = x if self.shortcut is None else self.shortcut(x)
        return h + (F.avg_pool2d(skip, 2) if self.down else skip)


class Generator(nn.Module):
    output_kind: OutputKind = "image"

    @records_init_args
    def __init__(
        self,
        z_dim: int = 128,
        channels: int = 3,
        image_size: int = 32,
        width: int = 256,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check(image_size, width, "model.g_width", 4)
        self.z_dim = z_dim
        self.n_classes = check_conditional(conditional, n_classes)
        if image_size == 32:
            widths = [width] * 4
        else:
            widths = [width * 4, width * 2, width, width // 2, width // 4]
        self.linear = nn.Linear(z_dim, 4 * 4 * widths[0])
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.blocks = nn.ModuleList(
            GBlock(a, b, self.n_classes) for a, b in itertools.pairwise(widths)
        )
        # The output BatchNorm stays unconditional, as in the projection-cGAN generator.
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out = _conv(widths[-1], channels, 3, 1.0)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes is not None:
            require_labels(y)
        h = self.linear(z).view(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class Discriminator(nn.Module):
    @records_init_args
    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        width: int = 128,
        spectral_norm: bool = True,
        pack: int = 1,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check(image_size, width, "model.d_width", 2)
        self.pack, self.conditional = check_pack(pack), conditional
        c = channels * pack
        if image_size == 32:
            blocks = [
                DBlock(c, width, down=True, first=True),
                DBlock(width, width, down=True),
                DBlock(width, width, down=False),
                DBlock(width, width, down=False),
            ]
            features = width
        else:
            w = [width // 2, width, width * 2, width * 4, width * 8]
            blocks = [DBlock(c, w[0], down=True, first=True)]
            pairs = list(itertools.pairwise(w))
            blocks += [DBlock(a, b, down=True) for a, b in pairs[:3]]
            blocks.append(DBlock(*pairs[3], down=False))
            features = w[4]
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(features, 1)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.head = ConditionalHead(features, conditional, n_classes, pack)
        if spectral_norm:
            spectral_norm_(self)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        # Global *sum* pooling (not mean), as in SNGAN: the logit scales with the feature map.
        h = F.relu(self.blocks(pack_samples(x, self.pack))).sum(dim=(2, 3))
        term, class_logits = self.head(h, y)
        return self.linear(h).squeeze(1) + term, class_logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.judge(x, y)[0]
