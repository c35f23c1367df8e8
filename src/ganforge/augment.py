"""DiffAugment (Zhao et al. 2020): random, differentiable augmentations T applied to every image D
sees, real and fake, in both the D and the G update. Because T is differentiable, G learns through
D(T(G(z))); because fakes are augmented too, G is not pushed to *produce* augmented images.

Each transform draws its parameters per sample, works on images in [-1, 1] (N, C, H, W), and
matches the authors' reference implementation: brightness +U(-0.5, 0.5), saturation x U(0, 2),
contrast x U(0.5, 1.5); translation by up to 1/8 of the size with zero fill; cutout of a square
of half the size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ganforge.errors import ConfigError

Transform = Callable[[Tensor, "torch.Generator | None"], Tensor]


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) per sample, shaped to broadcast over (C, H, W)."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=generator_device(generator, x))
    return u.to(device=x.device, dtype=x.dtype)


def _randint(
    low: int, high: int, x: Tensor, generator: torch.Generator | None, shape: tuple[int, ...]
) -> Tensor:
    r = torch.randint(low, high, shape, generator=generator, device=generator_device(generator, x))
    return r.to(x.device)


def generator_device(generator: torch.Generator | None, x: Tensor) -> torch.device:
    return x.device if generator is None else generator.device


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return x + (_uniform(x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(
    x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125
) -> Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sh, sh + 1, x, generator, (n, 1, 1))
    dx = _randint(-sw, sw + 1, x, generator, (n, 1, 1))
    # Output pixel (i, j) reads input pixel (i + dy, j + dx) of the image padded by one zero
    # pixel; sources outside the frame are clamped onto that padding, so they read 0.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centres range over the whole image, so the square may be cut off by the border.
    top = _randint(0, h + (1 - ch % 2), x, generator, (n, 1, 1)) - ch // 2
    left = _randint(0, w + (1 - cw % 2), x, generator, (n, 1, 1)) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Transform, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """`"color,translation,cutout"` -> its names, checked; None or "" -> () (no augmentation)."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ConfigError(
            f"system.diffaugment={policy!r} has unknown part(s) {unknown}; use a comma-separated "
            f"subset of {','.join(POLICIES)}, or null to disable"
        )
    return names


def diff_augment(
    x: Tensor, policy: Sequence[str], generator: torch.Generator | None = None
) -> Tensor:
    """Apply the named transforms in order; fresh random parameters for every call and sample."""
    if policy and x.dim() != 4:
        raise ConfigError(
            f"system.diffaugment={','.join(policy)} augments images, but the data are "
            f"{x.dim() - 1}-D vectors; set system.diffaugment=null"
        )
    for name in policy:
        for transform in POLICIES[name]:
            x = transform(x, generator)
    return x
