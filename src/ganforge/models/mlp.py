"""Fully connected G and D in the style of Goodfellow et al. 2014, for 2-D points and images."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError


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

    def __init__(
        self,
        z_dim: int = 64,
        hidden: int = 256,
        depth: int = 3,
        channels: int | None = None,
        image_size: int | None = None,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1 or hidden < 1 or z_dim < 1:
            raise ConfigError("model.depth, model.hidden and model.z_dim must be positive integers")
        self.init_args = dict(
            z_dim=z_dim,
            hidden=hidden,
            depth=depth,
            channels=channels,
            image_size=image_size,
            dim=dim,
        )
        self.z_dim = z_dim
        self.out_shape = _out_shape(channels, image_size, dim)
        self.is_image = len(self.out_shape) == 3
        body = _stack([z_dim] + [hidden] * depth, nn.ReLU())
        self.net = nn.Sequential(*body, nn.Linear(hidden, math.prod(self.out_shape)))

    def forward(self, z: Tensor) -> Tensor:
        x = self.net(z).view(z.shape[0], *self.out_shape)
        return torch.tanh(x) if self.is_image else x


class Discriminator(nn.Module):
    """Sample -> `depth` hidden LeakyReLU layers (optional dropout) -> one logit per sample."""

    def __init__(
        self,
        hidden: int = 256,
        depth: int = 3,
        dropout: float = 0.0,
        channels: int | None = None,
        image_size: int | None = None,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        self.init_args = dict(
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            channels=channels,
            image_size=image_size,
            dim=dim,
        )
        in_features = math.prod(_out_shape(channels, image_size, dim))
        body = _stack([in_features] + [hidden] * depth, nn.LeakyReLU(0.2), dropout)
        self.net = nn.Sequential(*body, nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)
