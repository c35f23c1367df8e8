"""2-D Gaussian mixtures, the mode-collapse benchmarks of the unrolled-GAN (Metz et al. 2017) and
PacGAN / VEEGAN papers: 8 modes on a ring and 25 modes on a 5×5 grid.

The mode centres (`modes`) and `std` are public because the toy metrics count a generated point
as "high quality" when it lies within a few std of its nearest mode.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ganforge.data.base import InMemoryDataModule
from ganforge.errors import ConfigError, check_int, check_positive


class ToyDataModule(InMemoryDataModule):
    """Points drawn uniformly over the modes, each with isotropic Gaussian noise of `std`."""

    dim = 2

    def __init__(
        self,
        *,
        modes: Tensor,
        std: float,
        n_samples: int,
        seed: int,
        dim: int = 2,
        **kwargs: Any,
    ) -> None:
        check_positive("data.std", std)
        check_int("data.n_samples", n_samples)
        check_int("data.seed", seed, minimum=0)
        if dim != 2:
            raise ConfigError(f"data.dim={dim} but the toy datasets are 2-D; drop the override")
        self.modes, self.std = modes, float(std)
        self.n_samples, self.seed = n_samples, seed
        self._n_classes = len(modes)
        super().__init__(**kwargs)

    @property
    def n_modes(self) -> int:
        """The modes a generator can cover (the health monitor's optimum for a mode count)."""
        return len(self.modes)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        # The test split is a fresh draw from the same mixture: a different stream, same recipe.
        g = torch.Generator().manual_seed(self.seed + (split == "test"))
        label = torch.randint(len(self.modes), (self.n_samples,), generator=g)
        noise = torch.randn(self.n_samples, 2, generator=g) * self.std
        return self.modes[label] + noise, label


class ToyRingDataModule(ToyDataModule):
    """`n_modes` Gaussians evenly spaced on a circle of `radius` (default 8 at radius 2)."""

    name = "toy_ring"

    def __init__(
        self,
        *,
        n_modes: int = 8,
        radius: float = 2.0,
        std: float = 0.02,
        n_samples: int = 50_000,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """Remaining keyword args: see `ToyDataModule` and `InMemoryDataModule`."""
        check_int("data.n_modes", n_modes)
        check_positive("data.radius", radius)
        angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
        modes = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        super().__init__(modes=modes.float(), std=std, n_samples=n_samples, seed=seed, **kwargs)


class ToyGridDataModule(ToyDataModule):
    """`grid_size`² Gaussians on a square grid of `spacing`, centred on 0 (default 5×5 over
    -4..4)."""

    name = "toy_grid"

    def __init__(
        self,
        *,
        grid_size: int = 5,
        spacing: float = 2.0,
        std: float = 0.05,
        n_samples: int = 50_000,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """Remaining keyword args: see `ToyDataModule` and `InMemoryDataModule`."""
        check_int("data.grid_size", grid_size)
        check_positive("data.spacing", spacing)
        axis = (torch.arange(grid_size, dtype=torch.float32) - (grid_size - 1) / 2) * spacing
        modes = torch.cartesian_prod(axis, axis)
        super().__init__(modes=modes, std=std, n_samples=n_samples, seed=seed, **kwargs)
