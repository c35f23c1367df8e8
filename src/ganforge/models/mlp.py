"""Fully connected G and D in the style of Goodfellow et al. 2014, for 2-D points and images.

Conditional G: the one-hot label is concatenated to z (Mirza & Osindero 2014). D supports
spectral norm, packing and the projection / ACGAN heads of `layers.py`.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.models.layers import (
    ConditionalHead,
    check_conditional,
    check_pack,
    one_hot,
    pack_samples,
    records_init_args,
    spectral_norm_,
)


def _out_shape(channels: int | None, image_size: int | None, dim: int | None) -> tuple[int, ...]:
    if channels is not None and image_size is not None:
        return (channels, image_size, image_size)
    if dim is not None:
        return (dim,)
    raise ConfigError(
        "model mlp needs either image data (data.channels and data.image_size) or points "
        "(data.dim); check the data config"
    )


def _stack(sizes: list[int], act: nn.Module, dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), act]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class Generator(nn.Module):
    """z -> `depth` hidden ReLU layers -> sample; tanh for images in [-1, 1], linear for points."""

    @records_init_args
    def __init__(
        self,
        z_dim: int = 64,
        hidden: int = 256,
        depth: int = 3,
        channels: int | None = None,
        image_size: int | None = None,
        dim: int | None = None,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1 or hidden < 1 or z_dim < 1:
            raise ConfigError("model.depth, model.hidden and model.z_dim must be positive integers")
        self.z_dim = z_dim
        self.n_classes = check_conditional(conditional, n_classes)
        self.out_shape = _out_shape(channels, image_size, dim)
        self.is_image = len(self.out_shape) == 3
        body = _stack([z_dim + (self.n_classes or 0)] + [hidden] * depth, nn.ReLU())
        self.net = nn.Sequential(*body, nn.Linear(hidden, math.prod(self.out_shape)))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes is not None:
            z = torch.cat([z, one_hot(y, self.n_classes, like=z)], dim=1)
        x = self.net(z).view(z.shape[0], *self.out_shape)
        return torch.tanh(x) if self.is_image else x


class Discriminator(nn.Module):
    """Sample (or pack of `pack` samples) -> `depth` hidden LeakyReLU layers (optional dropout)
    -> one logit."""

    @records_init_args
    def __init__(
        self,
        hidden: int = 256,
        depth: int = 3,
        dropout: float = 0.0,
        channels: int | None = None,
        image_size: int | None = None,
        dim: int | None = None,
        spectral_norm: bool = False,
        pack: int = 1,
        conditional: str = "none",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.pack, self.conditional = check_pack(pack), conditional
        in_features = math.prod(_out_shape(channels, image_size, dim)) * pack
        body = _stack([in_features] + [hidden] * depth, nn.LeakyReLU(0.2), dropout)
        self.net = nn.Sequential(*body, nn.Linear(hidden, 1))
        self.head = ConditionalHead(hidden, conditional, n_classes, pack)
        if spectral_norm:
            spectral_norm_(self)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.net[:-1](pack_samples(x.flatten(1), self.pack))
        term, class_logits = self.head(h, y)
        return self.net[-1](h).squeeze(1) + term, class_logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.judge(x, y)[0]
