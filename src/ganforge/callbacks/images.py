"""One path for images: a PNG on disk plus the same picture sent to every active logger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from ganforge.figures import figure_image  # noqa: F401  (callbacks import it from here)


def image_grid(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> an (H, W, 3) uint8 grid."""
    images = images.detach().float().cpu().clamp(-1, 1)
    nrow = nrow or max(1, round(images.shape[0] ** 0.5))
    grid = make_grid((images + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return (grid.mul(255).round().to(torch.uint8).permute(1, 2, 0)).numpy()


def save_and_log_image(
    image: np.ndarray, path: Path, key: str, step: int, loggers: list[Logger]
) -> Path:
    """Write `image` (H, W, 3 uint8) as PNG and hand it to each logger that can show images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
        # CSV and other loggers have no image channel; the PNG on disk is the record.
    return path
