"""The convolutional G and D of Radford et al. 2016 (DCGAN), for 28, 32 and 64 px images.

G: a transposed conv projects z (as a 1x1 map) to a 7x7 (28 px) or 4x4 (32/64 px) map, then
stride-2 transposed convs double the size and halve the width down to the output channels, with
BatchNorm + ReLU everywhere except the tanh output. D mirrors it with stride-2 convs, LeakyReLU(0.2)
and BatchNorm everywhere except its first and last layer. Weights start from N(0, 0.02).

A conditional G reads the label twice: one-hot beside z at its input (Mirza & Osindero 2014)
and in every BatchNorm, which becomes class-conditional. cBN alone is how the deep SNGAN ResNet is
conditioned, but in this 3-layer G it picks up the label very slowly (on MNIST-5k, trained
straight against a digit classifier: 46% of samples read as the asked digit after 300 steps with
cBN alone, 100% after 200 with the input path too).
D takes the spectral-norm switch, packing and the projection / ACGAN heads of `layers.py` (on its
flattened last feature map, the same features its final conv reads).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.models.layers import (
    ConditionalHead,
    LabelledSequential,
    batch_norm,
    check_conditional,
    check_pack,
    one_hot,
    pack_samples,
    records_init_args,
    spectral_norm_,
)
from ganforge.models.protocols import OutputKind

# image size -> (size of the first feature map, number of stride-2 up/down layers)
SIZES: dict[int, tuple[int, int]] = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _geometry(image_size: int) -> tuple[int, int]:
    if image_size not in SIZES:
        raise ConfigError(
            f"data.image_size={image_size} but model dcgan supports {sorted(SIZES)}; "
            "pick one with data.image_size=... or use model=mlp"
        )
    return SIZES[image_size]


def init_dcgan_(module: nn.Module) -> None:
    """Radford et al. 2016: all weights from N(0, 0.02); BatchNorm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    output_kind: OutputKind = "image"

    @records_init_args
    def __init__(
        self,
        z_dim: int = 100,
        channels: int = 1,
        image_size: int = 28,
        base_width: int = 64,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.n_classes = check_conditional(conditional, n_classes)
        start, n_up = _geometry(image_size)
        width = base_width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + (self.n_classes or 0), width, start, 1, 0, bias=False),
            batch_norm(width, self.n_classes),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                batch_norm(width // 2, self.n_classes),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = LabelledSequential(*layers)
        init_dcgan_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes is not None:
            z = torch.cat([z, one_hot(y, self.n_classes, like=z)], dim=1)
        return self.net(z.view(z.shape[0], -1, 1, 1), y)


class Discriminator(nn.Module):
    """With `spectral_norm`, D has no BatchNorm: BatchNorm rescales by batch statistics, undoing
    the per-layer Lipschitz bound (Miyato et al. 2018's standard CNN has no normalisation)."""

    @records_init_args
    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        base_width: int = 64,
        spectral_norm: bool = False,
        pack: int = 1,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.pack, self.conditional = check_pack(pack), conditional
        start, n_down = _geometry(image_size)
        width = base_width
        # No BatchNorm on D's input layer (Radford et al.: it caused sample oscillation).
        layers: list[nn.Module] = [
            nn.Conv2d(channels * pack, width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for _ in range(n_down - 1):
            norm = [] if spectral_norm else [nn.BatchNorm2d(width * 2)]
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm),
                *norm,
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, start, 1, 0))
        self.net = nn.Sequential(*layers)
        self.head = ConditionalHead(width * start * start, conditional, n_classes, pack)
        init_dcgan_(self)
        if spectral_norm:
            spectral_norm_(self)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.net[:-1](pack_samples(x, self.pack))
        term, class_logits = self.head(h.flatten(1), y)
        return self.net[-1](h).flatten() + term, class_logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.judge(x, y)[0]
