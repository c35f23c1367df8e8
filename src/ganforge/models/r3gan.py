"""R3GAN's generator and discriminator, "Config E" of Huang et al. 2024 ("The GAN is dead; long
live the GAN! A Modern GAN Baseline"), for 28, 32 and 64 px images. Written from the authors'
code (github brownvc/R3GAN, commit 19a7ddf; `file:N` is a line there); the blocks, init and
resampling are in `r3gan_layers.py`.

G (Networks.py:129-149): a learned basis of `width` 4x4 maps, each scaled by one output of a
bias-free linear map of z (`GenerativeBasis`, Networks.py:77-85; the basis starts N(0, 1)), then
stages of `blocks` residual blocks, each stage after the first entered through an upsampling
transition (Networks.py:97-111), and a 1x1 output conv with no activation: G's output is not
squashed by a tanh (Networks.py:138, 149), so samples may leave [-1, 1] (ganforge clamps them
only where it writes pixels).
D (Networks.py:151-173): a 1x1 input conv with no activation (Networks.py:159, 166), stages of
`blocks` residual blocks each followed by a downsampling transition (Networks.py:113-127), and
last a depthwise conv over the whole 4x4 map and a bias-free linear layer to the logit
(`DiscriminativeBasis`, Networks.py:87-95).
Widths: `width` at every stage (CIFAR-10: 768, train.py:179), or `stage_widths`, one per stage
from the lowest resolution up; D uses them in reverse (train.py:275-277). The authors' 2 blocks
per stage (train.py:180), expansion 2 (train.py:272) and 16 channels per group (train.py:181) are
the defaults; z has 64 dimensions (train.py:183).

Class conditioning (train.py:185-187): G concatenates a learned embedding of the label, as wide as
z, to z (Networks.py:140-144); D's linear layer outputs as many features as its last width and
the logit is their dot product with an embedding of the label, initialised with gain
1/sqrt(width) (Networks.py:157, 162-171): a projection with no unconditional term. The authors'
bias-free linear maps of one-hot labels are written as `nn.Embedding`s (the same function and
init). With packing, the embeddings of a pack's labels are summed (as `layers.ConditionalHead`
does). `conditional=acgan` (not the authors') adds ganforge's ACGAN head on the features the last
linear layer reads.

Deviations. 28 px: the authors' sizes are 4 * 2^k; 28 = 7 * 2^2, so the basis is 7x7 (D's
depthwise conv 7x7) with three stages (7, 14, 28), as dcgan.py starts 28 px from a 7x7 map: every
pixel is generated and judged, nothing is cropped, padded or resized. The authors' bf16 stages
(train.py:182, training/networks.py:23-24) are left to Lightning's `trainer.precision`.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError, check_int
from ganforge.models.layers import (
    ConditionalHead,
    check_conditional,
    check_pack,
    pack_samples,
    records_init_args,
    require_labels,
)
from ganforge.models.protocols import OutputKind
from ganforge.models.r3gan_layers import Downsample, ResidualBlock, Upsample, conv, msr_init_

# image size -> (side of the basis, number of stages)
SIZES: dict[int, tuple[int, int]] = {28: (7, 3), 32: (4, 4), 64: (4, 5)}


def geometry(
    image_size: int,
    width: int,
    blocks: int,
    expansion: int,
    group_size: int,
    stage_widths: str | None,
) -> tuple[int, list[int]]:
    """(basis side, widths from the lowest resolution up), or a ConfigError naming the key."""
    if image_size not in SIZES:
        raise ConfigError(
            f"data.image_size={image_size} but model r3gan supports {sorted(SIZES)}; "
            "pick one with data.image_size=... or use model=mlp"
        )
    for key, value in [
        ("model.width", width),
        ("model.blocks", blocks),
        ("model.expansion", expansion),
        ("model.group_size", group_size),
    ]:
        check_int(key, value)
    side, n_stages = SIZES[image_size]
    widths = [width] * n_stages if stage_widths is None else _parse(stage_widths, n_stages)
    for w in widths:
        if (w * expansion) % group_size:
            raise ConfigError(
                f"model.group_size={group_size} must divide every expanded width, but a stage "
                f"of width {w} expands to {w} * model.expansion={expansion} = {w * expansion} "
                "channels; pick a width or group size that divides"
            )
    return side, widths


def _parse(stage_widths: str, n_stages: int) -> list[int]:
    parts = [p for p in re.split(r"[\s,]+", str(stage_widths).strip()) if p]
    if len(parts) != n_stages or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(
            f"model.stage_widths={stage_widths!r} must list {n_stages} positive integers at this "
            f"data.image_size (one per stage, lowest resolution first, e.g. "
            f"'{' '.join(['64'] * n_stages)}'), or be null to use model.width everywhere"
        )
    return [int(p) for p in parts]


def _stages(
    widths: list[int], blocks: int, expansion: int, group_size: int, up: bool
) -> list[nn.Sequential]:
    n_blocks = blocks * len(widths)  # L of the fix-up rule counts every block of the network
    stages = []
    for i, w in enumerate(widths):
        body = [ResidualBlock(w, expansion, group_size, n_blocks) for _ in range(blocks)]
        if up and i > 0:
            body.insert(0, Upsample(widths[i - 1], w))
        elif not up and i < len(widths) - 1:
            body.append(Downsample(w, widths[i + 1]))
        stages.append(nn.Sequential(*body))
    return stages


class Generator(nn.Module):
    output_kind: OutputKind = "image"

    @records_init_args
    def __init__(
        self,
        z_dim: int = 64,
        channels: int = 3,
        image_size: int = 32,
        width: int = 768,
        blocks: int = 2,
        expansion: int = 2,
        group_size: int = 16,
        stage_widths: str | None = None,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_int("model.z_dim", z_dim)
        self.z_dim = z_dim
        self.n_classes = check_conditional(conditional, n_classes)
        side, widths = geometry(image_size, width, blocks, expansion, group_size, stage_widths)
        if self.n_classes is not None:
            self.embed = nn.Embedding(self.n_classes, z_dim)
            msr_init_(self.embed, 1.0)
        self.basis = nn.Parameter(torch.randn(widths[0], side, side))
        inputs = z_dim * (1 if self.n_classes is None else 2)
        self.modulation = nn.Linear(inputs, widths[0], bias=False)
        msr_init_(self.modulation, 1.0)
        self.stages = nn.Sequential(*_stages(widths, blocks, expansion, group_size, up=True))
        self.out = conv(widths[-1], channels, 1, 1.0)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes is not None:
            z = torch.cat([z, self.embed(require_labels(y))], dim=1)
        h = self.basis[None] * self.modulation(z)[:, :, None, None]
        return self.out(self.stages(h))


class Discriminator(nn.Module):
    @records_init_args
    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        width: int = 768,
        blocks: int = 2,
        expansion: int = 2,
        group_size: int = 16,
        stage_widths: str | None = None,
        pack: int = 1,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.pack, self.conditional = check_pack(pack), conditional
        n_classes = check_conditional(conditional, n_classes)
        side, widths = geometry(image_size, width, blocks, expansion, group_size, stage_widths)
        widths = widths[::-1]
        last = widths[-1]
        self.input = conv(channels * pack, widths[0], 1, 1.0)
        self.stages = nn.Sequential(*_stages(widths, blocks, expansion, group_size, up=False))
        self.basis = nn.Conv2d(last, last, side, groups=last, bias=False)
        msr_init_(self.basis, 1.0)
        features = last if conditional == "projection" else 1
        self.linear = nn.Linear(last, features, bias=False)
        msr_init_(self.linear, 1.0)
        if conditional == "projection":
            self.embed = nn.Embedding(n_classes, features)
            msr_init_(self.embed, 1 / math.sqrt(features))
        acgan = "acgan" if conditional == "acgan" else "none"
        self.head = ConditionalHead(last, acgan, n_classes, pack)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.basis(self.stages(self.input(pack_samples(x, self.pack)))).flatten(1)
        out = self.linear(h)
        if self.conditional == "projection":
            e = self.embed(require_labels(y)).view(h.shape[0], self.pack, -1).sum(1)
            logits = (out * e).sum(1)
        else:
            logits = out.squeeze(1)
        return logits, self.head(h, y)[1]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.judge(x, y)[0]
