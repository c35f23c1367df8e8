"""Checkpoints every N GAN iterations plus an always-current `last.ckpt`, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch

from ganforge.errors import GanforgeError


class NonFiniteWeightsError(GanforgeError, FloatingPointError):
    """The networks' weights hold NaN or inf; saving them would overwrite a good checkpoint."""


class IterationCheckpoint(L.Callback):
    def __init__(self, dirpath: str, every_n_iters: int = 1000, save_last: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_iters = every_n_iters
        self.save_last = save_last
        self._last_saved = -1

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration
        if it % self.every_n_iters == 0 and it != self._last_saved:
            self.save(trainer, pl_module, self.dirpath / f"iter_{it:07d}.ckpt")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        if pl_module.iteration != self._last_saved:
            self.save(trainer, pl_module, None)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path | None) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteWeightsError(
                f"weights became non-finite at iteration {pl_module.iteration}; not saving, so "
                f"{self.last_path} keeps the last good state. Lower optim.*.lr, add a penalty "
                "(loss=wgan_gp or system.r1_gamma) or set system.grad_clip_d/grad_clip_g"
            )
        targets = [path] if path is not None else []
        if self.save_last:
            targets.append(self.last_path)
        for target in targets:
            atomic_save_checkpoint(trainer, target)
        self._last_saved = pl_module.iteration


def atomic_save_checkpoint(trainer: L.Trainer, path: Path) -> None:
    """Write to a temporary file and rename: a crash mid-write never leaves a half `last.ckpt`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # weights_only=False: a full, resumable checkpoint (optimizers, loops, callbacks) — and said
    # explicitly, or Lightning logs a line about the default at every save.
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)
