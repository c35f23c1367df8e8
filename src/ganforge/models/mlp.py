"""Fully connected G and D in the style of Goodfellow et al. 2014, for 2-D points and images.

Conditional G: the one-hot label is concatenated to z (Mirza & Osindero 2014). D supports
spectral norm, packing and the projection / ACGAN heads of `layers.py`.

The papers' own networks are options: a BatchNorm generator (PacGAN's: bias-free linear layers,
BatchNorm, ReLU), maxout discriminator units (Goodfellow et al. 2014; PacGAN: 5 pieces), input
dropout, and their weight initialisations (`init` = normal / uniform with `init_scale`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.models.layers import (
    ConditionalHead,
    Maxout,
    check_conditional,
    check_init,
    check_pack,
    init_weights_,
    one_hot,
    pack_samples,
    records_init_args,
    spectral_norm_,
)
from ganforge.models.protocols import OutputKind, is_image


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


NORMS = ("none", "batch")
ACTIVATIONS = ("leaky_relu", "maxout")


def _generator_body(sizes: list[int], norm: str, bias: bool, bn_momentum: float) -> list[nn.Module]:
    if norm == "none":
        # Same layout (and state-dict keys) as before the BatchNorm option existed.
        return [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b, bias), nn.ReLU())]
    return [
        m
        for a, b in itertools.pairwise(sizes)
        for m in (nn.Linear(a, b, bias), nn.BatchNorm1d(b, momentum=bn_momentum), nn.ReLU())
    ]


class Generator(nn.Module):
    """z -> `depth` hidden ReLU layers -> sample; tanh for images in [-1, 1], linear for points.

    norm="batch": each hidden layer is linear -> BatchNorm -> ReLU (PacGAN's G; `bias=False`
    drops the linear bias BatchNorm's shift makes redundant, as the authors' code does).
    `bn_momentum` is torch's running-statistics momentum (PacGAN's code: 0.05).
    """

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
        norm: str = "none",
        bias: bool = True,
        bn_momentum: float = 0.1,
        init: str = "default",
        init_scale: float = 0.02,
    ) -> None:
        super().__init__()
        if depth < 1 or hidden < 1 or z_dim < 1:
            raise ConfigError("model.depth, model.hidden and model.z_dim must be positive integers")
        if norm not in NORMS:
            raise ConfigError(f"model.generator.norm={norm!r} must be one of {list(NORMS)}")
        if not 0.0 < bn_momentum <= 1.0:
            raise ConfigError(f"model.generator.bn_momentum={bn_momentum} must be in (0, 1]")
        check_init("model.generator.init", init, init_scale)
        self.z_dim = z_dim
        self.n_classes = check_conditional(conditional, n_classes)
        self.out_shape = _out_shape(channels, image_size, dim)
        self.output_kind: OutputKind = "image" if len(self.out_shape) == 3 else "vector"
        sizes = [z_dim + (self.n_classes or 0)] + [hidden] * depth
        body = _generator_body(sizes, norm, bias, bn_momentum)
        # The output layer keeps its bias: no BatchNorm follows it.
        self.net = nn.Sequential(*body, nn.Linear(hidden, math.prod(self.out_shape)))
        init_weights_(self.net, init, init_scale)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes is not None:
            z = torch.cat([z, one_hot(y, self.n_classes, like=z)], dim=1)
        x = self.net(z).view(z.shape[0], *self.out_shape)
        return torch.tanh(x) if is_image(self) else x


class Discriminator(nn.Module):
    """Sample (or pack of `pack` samples) -> `depth` hidden layers (optional dropout) -> one logit.

    activation="leaky_relu": linear -> LeakyReLU(0.2) units; "maxout": maxout units of `pieces`
    pieces (PacGAN's D: 5; Goodfellow et al. 2014's MNIST D: 5). `input_dropout` drops input
    features before the first layer (Goodfellow et al. 2014: 0.2), `dropout` each hidden layer's.
    """

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
        activation: str = "leaky_relu",
        pieces: int = 5,
        input_dropout: float = 0.0,
        init: str = "default",
        init_scale: float = 0.02,
    ) -> None:
        super().__init__()
        self.pack, self.conditional = check_pack(pack), conditional
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.discriminator.activation={activation!r} must be one of {list(ACTIVATIONS)}"
            )
        for key, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"model.discriminator.{key}={rate} must be in [0, 1)")
        check_init("model.discriminator.init", init, init_scale)
        in_features = math.prod(_out_shape(channels, image_size, dim)) * pack
        sizes = [in_features] + [hidden] * depth
        if activation == "maxout":
            body: list[nn.Module] = []
            for a, b in itertools.pairwise(sizes):
                body.append(Maxout(a, b, pieces))
                if dropout > 0:
                    body.append(nn.Dropout(dropout))
        else:
            body = _stack(sizes, nn.LeakyReLU(0.2), dropout)
        if input_dropout > 0:
            body.insert(0, nn.Dropout(input_dropout))
        self.net = nn.Sequential(*body, nn.Linear(hidden, 1))
        init_weights_(self.net, init, init_scale)
        self.head = ConditionalHead(hidden, conditional, n_classes, pack)
        if spectral_norm:
            spectral_norm_(self)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.net[:-1](pack_samples(x.flatten(1), self.pack))
        term, class_logits = self.head(h, y)
        return self.net[-1](h).squeeze(1) + term, class_logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.judge(x, y)[0]
