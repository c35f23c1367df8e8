"""Sample pictures from the fixed noise every N GAN iterations: an image grid (one row per class
for a conditional model), or for 2-D data a scatter of generated points over the real modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ganforge.callbacks.images import figure_image, image_grid, save_and_log_image
from ganforge.errors import check_int
from ganforge.models.protocols import is_image

N_SCATTER = 2000  # points per 2-D scatter; fixed seed so frames are comparable


def fixed_points(pl_module: Any, n: int, ema: bool) -> Tensor:
    """n generated 2-D points from one fixed noise batch (and fixed labels): pictures taken at
    different iterations then show the same z moving."""
    z = torch.randn(n, pl_module.z_dim, generator=torch.Generator().manual_seed(0))
    y = pl_module.sample_y(n, generator=torch.Generator().manual_seed(1))
    return pl_module.generate(z, y, ema=ema)


def draw_points(
    ax: Any, fake: Tensor, real: Tensor | None, modes: Tensor | None, size: float = 2
) -> None:
    """Generated points (blue) over real data (grey), the modes' centres marked on top (red)."""
    if real is not None:
        r = real.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.75", label="real")
    f = fake.detach().float().cpu().numpy()
    ax.scatter(f[:, 0], f[:, 1], s=size, c="tab:blue", alpha=0.5, label="generated")
    if modes is not None:
        m = modes.cpu().numpy()
        ax.scatter(m[:, 0], m[:, 1], s=30, marker="x", lw=0.8, c="tab:red", label="modes", zorder=3)
    ax.set_aspect("equal")


def scatter_image(
    fake: Tensor, real: Tensor | None, modes: Tensor | None, title: str
) -> np.ndarray:
    """Render generated 2-D points over real data as an (H, W, 3) uint8 image."""
    fig = Figure(figsize=(4, 4), dpi=100)  # headless, and the backend is left alone
    ax = fig.subplots()
    draw_points(ax, fake, real, modes)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=6, markerscale=3)
    return figure_image(fig)


class SampleGrid(L.Callback):
    """Every `every_n_iters` GAN iterations and at the end, save `dirpath/iter_XXXXXXX.png`."""

    def __init__(self, dirpath: str, every_n_iters: int = 500, ema: bool = True) -> None:
        check_int("callbacks.samples.every_n_iters", every_n_iters)
        self.dirpath = Path(dirpath)
        self.every_n_iters = every_n_iters
        self.ema = ema
        self._last_iter = -1
        self.last_path: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.iteration % self.every_n_iters == 0:
            self.render(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.render(trainer, pl_module)

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        it = pl_module.iteration
        if it == self._last_iter or not trainer.is_global_zero:
            return None
        self._last_iter = it
        if is_image(pl_module.G):
            fixed_y = pl_module.fixed_y
            fake = pl_module.generate(pl_module.fixed_z, fixed_y, ema=self.ema)
            # Conditional: the fixed noise is laid out one row per class.
            columns = None if fixed_y is None else len(fixed_y) // pl_module.n_classes
            image = image_grid(fake, nrow=columns)
        else:
            dm = trainer.datamodule
            real = dm.real_samples(N_SCATTER) if dm is not None else None
            fake = fixed_points(pl_module, N_SCATTER, self.ema)
            image = scatter_image(fake, real, getattr(dm, "modes", None), f"iteration {it}")
        path = self.dirpath / f"iter_{it:07d}.png"
        self.last_path = save_and_log_image(image, path, "samples", it, trainer.loggers)
        return path
