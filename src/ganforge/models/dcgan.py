"""The convolutional G and D of Radford et al. 2016 (DCGAN), for 28, 32 and 64 px images.

G: a transposed conv projects z (as a 1x1 map) to a 7x7 (28 px) or 4x4 (32/64 px) map, then
stride-2 transposed convs double the size and halve the width down to the output channels, with
BatchNorm + ReLU everywhere except the tanh output. D mirrors it with stride-2 convs, LeakyReLU(0.2)
and BatchNorm everywhere except its first and last layer. Weights start from N(0, 0.02).
"""

from __future__ import annotations

from torch import Tensor, nn

from ganforge.errors import ConfigError

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
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(
        self, z_dim: int = 100, channels: int = 1, image_size: int = 28, base_width: int = 64
    ) -> None:
        super().__init__()
        self.init_args = dict(
            z_dim=z_dim, channels=channels, image_size=image_size, base_width=base_width
        )
        self.z_dim = z_dim
        start, n_up = _geometry(image_size)
        width = base_width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, start, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, channels: int = 1, image_size: int = 28, base_width: int = 64) -> None:
        super().__init__()
        self.init_args = dict(channels=channels, image_size=image_size, base_width=base_width)
        start, n_down = _geometry(image_size)
        width = base_width
        # No BatchNorm on D's input layer (Radford et al.: it caused sample oscillation).
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, start, 1, 0))
        self.net = nn.Sequential(*layers)
        init_dcgan_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
