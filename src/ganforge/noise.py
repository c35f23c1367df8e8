"""The generator's inputs: the fixed grid noise and the training noise stream.

The training stream (latents and, for a conditional model, fake labels) has its own CPU generator:
it does not depend on the device or on other users of the global RNG, and its state goes into the
checkpoint. Under DDP every rank draws the whole global batch and keeps its own slice, so the
ranks get different noise while their generators stay in lockstep (one state to checkpoint), and
the global batch is what one process of batch world_size * n would draw — DDP is then the same
computation as a single process on the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The training stream is seeded apart from the fixed grid noise (seeded with `seed` itself), so
# the first training batch does not repeat the grid's latents.
NOISE_SEED_OFFSET = 0x5EED_0000


def fixed_inputs(
    n_fixed: int, seed: int, z_dim: int, n_classes: int | None
) -> tuple[Tensor, Tensor | None]:
    """The sample grid's noise and labels; for a conditional model, one row per class
    (ceil(n_fixed / n_classes) columns) where each column repeats one z, so a row shows the class
    and a column the style. Labels are None for an unconditional model."""
    g = torch.Generator().manual_seed(seed)
    if n_classes is None:
        return torch.randn(n_fixed, z_dim, generator=g), None
    columns = -(-n_fixed // n_classes)
    z = torch.randn(columns, z_dim, generator=g).repeat(n_classes, 1)
    return z, torch.arange(n_classes).repeat_interleave(columns)


class TrainingNoise:
    """The seeded stream of (z, fake labels) the GAN iteration draws from."""

    def __init__(self, seed: int, z_dim: int, n_classes: int | None) -> None:
        self.z_dim, self.n_classes = z_dim, n_classes
        self.generator = torch.Generator().manual_seed(seed + NOISE_SEED_OFFSET)

    def draw(
        self, n: int, device: torch.device, world: int = 1, rank: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """This rank's n latents (and labels, if conditional) of a global batch of world * n."""
        keep = slice(rank * n, (rank + 1) * n)
        z = torch.randn(world * n, self.z_dim, generator=self.generator)[keep].to(device)
        if self.n_classes is None:
            return z, None
        y = torch.randint(self.n_classes, (world * n,), generator=self.generator)[keep]
        return z, y.to(device)

    def get_state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
