"""The Stacked-MNIST networks of PacGAN's code (Lin et al. 2018), for 28 (or 32) px images.

Both of its Stacked-MNIST settings build on carpedm20's DCGAN-tensorflow, so one G and one D
here take both shapes (the presets cite the authors' lines; `conf/model/unrolled_dcgan.yaml`
and `veegan_dcgan.yaml` set them):

- Unrolled-GAN setting (Metz et al. 2017; PacGAN Table 3): G projects z linearly to a 4x4x64
  map, three 3x3 stride-2 transposed convs to 32, 16, 8 maps (BatchNorm-ReLU after the projection
  and each), then a 3x3 stride-1 conv to the image and tanh; D has three 3x3 stride-2 convs of 2,
  4, 8 (D = G/4) or 4, 8, 16 (D = G/2) maps, each followed by BatchNorm (the first one too) and
  LeakyReLU(0.3), then a linear layer to one logit.
- VEEGAN setting (Srivastava et al. 2017; PacGAN Table 2): DCGAN with 5x5 kernels, G 512 maps
  at 2x2 -> 256, 128, 64 -> the image by four stride-2 transposed convs, D 64, 128, 256, 512
  maps by four stride-2 convs (no BatchNorm on the first), LeakyReLU(0.2), linear to one logit.

Padding is TensorFlow's "SAME", as in the authors' code: a stride-2 conv maps s px to ceil(s/2),
padding the extra pixel after (below/right), and each transposed conv is that conv's adjoint,
cropped to the size its conv would read (28 <- 14 <- 7 <- 4). Weights as the code draws them:
convs from a normal truncated at 2 std of 0.02, transposed convs and linear layers from
N(0, 0.02^2), biases 0, BatchNorm scale 1 and shift 0 (TensorFlow's BatchNorm defaults, which
torch's momentum 0.1 and eps 1e-5 equal).

`prior="uniform"`: ganforge draws every latent from N(0, I) (training, sample grids, evaluation,
ganforge-sample); this G first maps it to u = 2 Phi(z) - 1 = erf(z / sqrt 2), which is exactly
U(-1, 1)^d, the VEEGAN code's prior, so the same G serves every caller unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import ConfigError, check_int, check_positive
from ganforge.models.layers import check_pack, init_weights_, pack_samples, records_init_args
from ganforge.models.protocols import OutputKind

# The papers' 28 px, and 32 px for Stacked MNIST padded to 32 (data.image_size=32).
SIZES = (28, 32)
PRIORS = ("normal", "uniform")
OUTPUT_LAYERS = ("conv", "deconv")


def _check_image(image_size: int | None, channels: int | None, model: str) -> None:
    if image_size not in SIZES or channels is None:
        raise ConfigError(
            f"data.image_size={image_size} but model {model} takes images of {list(SIZES)} px "
            "(its papers' 28, or 32); pick one with data.image_size=... or use model=mlp"
        )


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) of a conv over `size` pixels: the output has
    ceil(size / stride) pixels and an odd total padding puts the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def halvings(size: int, n: int) -> list[int]:
    """[size, ceil(size/2), ...]: the sizes of the n + 1 maps of n stride-2 SAME convs."""
    sizes = [size]
    for _ in range(n):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


class SameConv2d(nn.Module):
    """A conv with TensorFlow's SAME padding for inputs of `size` px (padding fixed at build)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, size: int) -> None:
        super().__init__()
        before, after = same_padding(size, kernel, stride)
        self.pad = (before, after, before, after)  # F.pad order: left, right, top, bottom
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class SameConvTranspose2d(nn.Module):
    """TensorFlow's conv2d_transpose to `size` px: the adjoint of a stride-2 SAME conv over
    `size` px, i.e. the full transposed conv cropped by that conv's padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, size: int) -> None:
        super().__init__()
        self.start, self.size = same_padding(size, kernel, 2)[0], size
        self.deconv = nn.ConvTranspose2d(in_ch, out_ch, kernel, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.deconv(x)
        end = self.start + self.size
        return h[:, :, self.start : end, self.start : end]


def init_tf_dcgan_(module: nn.Module) -> None:
    """DCGAN-tensorflow's initialisation: N(0, 0.02^2) weights (convs: truncated at 2 std),
    zero biases; BatchNorm keeps its identity affine map (`init_weights_` leaves it)."""
    init_weights_(module, "normal", 0.02)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.04, 0.04)


class Generator(nn.Module):
    """z -> linear -> BatchNorm-ReLU maps -> `n_up` stride-2 transposed convs -> tanh image.

    `base_width` is the width of the last hidden map; each earlier one is twice as wide.
    output_layer="conv" (Unrolled GAN): all n_up transposed convs are hidden (BatchNorm-ReLU),
    then a stride-1 conv draws the image. "deconv" (VEEGAN's DCGAN): the last transposed conv
    draws it.
    """

    output_kind: OutputKind = "image"
    n_classes = None  # unconditional: the papers' Stacked-MNIST models are

    @records_init_args
    def __init__(
        self,
        z_dim: int = 256,
        channels: int | None = 3,
        image_size: int | None = 28,
        base_width: int = 8,
        kernel_size: int = 3,
        n_up: int = 3,
        output_layer: str = "conv",
        prior: str = "normal",
    ) -> None:
        super().__init__()
        _check_image(image_size, channels, "model.generator")
        for key, value in (("z_dim", z_dim), ("base_width", base_width), ("n_up", n_up)):
            check_int(f"model.{key}", value)
        check_int("model.generator.kernel_size", kernel_size)
        if output_layer not in OUTPUT_LAYERS:
            raise ConfigError(
                f"model.generator.output_layer={output_layer!r} must be one of "
                f"{list(OUTPUT_LAYERS)}"
            )
        if prior not in PRIORS:
            raise ConfigError(f"model.prior={prior!r} must be one of {list(PRIORS)}")
        assert channels is not None and image_size is not None  # _check_image
        self.z_dim, self.prior = z_dim, prior
        sizes = halvings(image_size, n_up)[::-1]  # e.g. 4, 7, 14, 28
        hidden = n_up if output_layer == "conv" else n_up - 1
        width = base_width * 2**hidden
        self.start = (width, sizes[0])
        self.project = nn.Linear(z_dim, width * sizes[0] ** 2)
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU(True)]
        for size in sizes[1 : hidden + 1]:
            layers += [
                SameConvTranspose2d(width, width // 2, kernel_size, size),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        if output_layer == "conv":
            layers.append(SameConv2d(width, channels, kernel_size, 1, image_size))
        else:
            layers.append(SameConvTranspose2d(width, channels, kernel_size, image_size))
        self.net = nn.Sequential(*layers, nn.Tanh())
        init_tf_dcgan_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.prior == "uniform":
            # N(0, 1) -> U(-1, 1) exactly: Phi(z) is uniform on (0, 1).
            z = torch.erf(z / math.sqrt(2.0))
        width, size = self.start
        return self.net(self.project(z).view(z.shape[0], width, size, size))


class Discriminator(nn.Module):
    """Sample (or pack of `pack` samples, stacked along channels) -> `n_down` stride-2 SAME convs
    of base_width, 2 base_width, ... maps, each with BatchNorm (the first only with
    `first_norm`) and LeakyReLU(`slope`) -> linear -> one logit."""

    conditional = "none"

    @records_init_args
    def __init__(
        self,
        channels: int | None = 3,
        image_size: int | None = 28,
        base_width: int = 2,
        kernel_size: int = 3,
        n_down: int = 3,
        slope: float = 0.3,
        first_norm: bool = True,
        pack: int = 1,
    ) -> None:
        super().__init__()
        _check_image(image_size, channels, "model.discriminator")
        check_int("model.d_width", base_width)
        check_int("model.discriminator.kernel_size", kernel_size)
        check_int("model.discriminator.n_down", n_down)
        check_positive("model.discriminator.slope", slope)
        assert channels is not None and image_size is not None  # _check_image
        self.pack = check_pack(pack)
        sizes = halvings(image_size, n_down)  # e.g. 28, 14, 7, 4
        layers: list[nn.Module] = []
        width, in_ch = base_width, channels * pack
        for i, size in enumerate(sizes[:-1]):
            norm = [nn.BatchNorm2d(width)] if i > 0 or first_norm else []
            layers += [SameConv2d(in_ch, width, kernel_size, 2, size), *norm]
            layers.append(nn.LeakyReLU(slope, True))
            in_ch, width = width, width * 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(in_ch * sizes[-1] ** 2, 1))
        init_tf_dcgan_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(pack_samples(x, self.pack)).flatten()
