"""Periodic evaluation during training: `val/*` metrics against GAN iterations, plus a
`best_fid.ckpt` that always holds the best-FID state seen so far."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L

from ganforge.callbacks.checkpoint import atomic_save_checkpoint
from ganforge.errors import check_int
from ganforge.evaluation import Evaluator, flat_metrics


class PeriodicEvaluation(L.Callback):
    def __init__(
        self,
        evaluator: Evaluator,
        every_n_iters: int = 1000,
        dirpath: str | None = None,
        ema: bool = True,
    ) -> None:
        check_int("callbacks.evaluation.every_n_iters", every_n_iters)
        self.evaluator, self.every_n_iters, self.ema = evaluator, every_n_iters, ema
        self.dirpath = Path(dirpath) if dirpath else None
        self.best_fid = math.inf
        self._last_iter = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.iteration % self.every_n_iters == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        it = pl_module.iteration
        if it == self._last_iter or trainer.fast_dev_run or trainer.sanity_checking:
            return {}
        self._last_iter = it
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            results = self.evaluator(
                self._generate(pl_module),
                pl_module.z_dim,
                getattr(pl_module.G, "n_classes", None),
                trainer.datamodule,
                pl_module.device,
                ema=self.ema and pl_module.G_ema is not None,
            )
            metrics = flat_metrics(results)
            pl_module.log_iteration_metrics(metrics)
        fid = trainer.strategy.broadcast(metrics.get("val/fid", math.inf), src=0)
        if self.dirpath is not None and fid < self.best_fid:
            self.best_fid = fid
            # Every rank calls save_checkpoint (it may synchronise); only rank 0 writes.
            atomic_save_checkpoint(trainer, self.dirpath / "best_fid.ckpt")
        return metrics

    def _generate(self, pl_module: Any):
        def generate(z, y):
            if y is None:
                return pl_module.generate(z, ema=self.ema)
            return pl_module.generate(z, y, ema=self.ema)

        return generate

    def state_dict(self) -> dict[str, Any]:
        return {"best_fid": self.best_fid}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_fid = float(state_dict.get("best_fid", math.inf))
