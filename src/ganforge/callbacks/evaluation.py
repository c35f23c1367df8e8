"""Periodic evaluation during training: `val/*` metrics against GAN iterations, plus a
`best_<metric>.ckpt` that always holds the best state seen so far by the run's primary metric.

The primary metric is the first configured entry of `metrics.names` that the data can be scored
by (`metrics.registry`), ranked in the registry's direction: `best_fid.ckpt` for images with the
default names, `best_modes.ckpt` for Stacked MNIST scored by `stacked_modes` (most modes),
`best_reverse_kl.ckpt` for the 2-D mixtures.

The end of training is scored with `final_n_samples` when given (the protocol's N, e.g. 26,000 on
Stacked MNIST), so the run's last logged values are comparable with the paper's; the periodic
evaluations use the evaluator's own, smaller count.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L

from ganforge.callbacks.checkpoint import atomic_save_checkpoint
from ganforge.errors import ConfigError, check_int
from ganforge.evaluation import Evaluator, flat_metrics
from ganforge.evaluation.runner import MAX_SAMPLES
from ganforge.metrics import registry

log = logging.getLogger("ganforge")

# every_n_iters=null: an evaluation every 1,000 iterations, but at least POINTS_PER_RUN in a run
# (plus the final one), so a short sweep's curves are curves, not a single dot.
DEFAULT_EVERY = 1000
POINTS_PER_RUN = 4


def default_interval(max_iters: int | None) -> int:
    """min(1000, max_iters // 4), at least 1; 1000 for a run without max_iters."""
    if not max_iters:
        return DEFAULT_EVERY
    return max(1, min(DEFAULT_EVERY, max_iters // POINTS_PER_RUN))


def is_better(value: float, best: float | None, direction: str) -> bool:
    """Strictly better than `best` (None: nothing yet) in `direction`; NaN never is."""
    if math.isnan(value):
        return False
    if best is None:
        return math.isfinite(value)  # inf (reverse KL with no mode near) is no best state
    return value > best if direction == registry.MAXIMIZE else value < best


class PeriodicEvaluation(L.Callback):
    def __init__(
        self,
        evaluator: Evaluator,
        every_n_iters: int | None = None,
        dirpath: str | None = None,
        ema: bool = True,
        final_n_samples: int | None = None,
    ) -> None:
        """`every_n_iters`: None follows the run's length (`default_interval`). `final_n_samples`:
        samples for the evaluation at the end of training (None: the evaluator's `n_samples`, as
        the periodic ones)."""
        key = "callbacks.evaluation"
        if every_n_iters is not None:
            check_int(f"{key}.every_n_iters", every_n_iters)
        if final_n_samples is not None:
            check_int(f"{key}.final_n_samples", final_n_samples, minimum=2)
            if final_n_samples > MAX_SAMPLES:
                raise ConfigError(
                    f"{key}.final_n_samples={final_n_samples} is more than {MAX_SAMPLES}; pick "
                    f"the protocol's count (e.g. 26000 for Stacked MNIST, 50000 for FID)"
                )
        self.evaluator, self.ema = evaluator, ema
        self.every_n_iters = every_n_iters or DEFAULT_EVERY  # until setup knows the run's length
        self._every_given = every_n_iters is not None
        self.final_n_samples = final_n_samples
        self.dirpath = Path(dirpath) if dirpath else None
        self.monitor: str | None = None  # `val/<primary>`, once the data is known
        self.best: dict[str, float] = {}  # monitored key -> best value so far
        self._last_iter = -1

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # Before iteration 1: the metrics this data can be scored by (a ConfigError if none) and
        # what they need (the digit classifier is trained or read now, its accuracy checked).
        if not self._every_given:
            self.every_n_iters = default_interval(getattr(pl_module, "max_iters", None))
        datamodule = trainer.datamodule
        if datamodule is None:
            return
        chosen = self.evaluator.metrics_for(datamodule)
        self.monitor = registry.primary_key([m.name for m in chosen])
        self.evaluator.prepare(datamodule)

    @property
    def best_path(self) -> Path | None:
        if self.dirpath is None or self.monitor is None:
            return None
        return self.dirpath / f"best_{self.monitor.removeprefix('val/')}.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.iteration % self.every_n_iters == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        final = self.final_n_samples
        if final is not None and final != self.evaluator.n_samples:
            self._last_iter = -1  # scored again at the protocol's count even if just evaluated
        if self._last_iter != pl_module.iteration and trainer.is_global_zero:
            # The progress bar's 100 % line is not the end: say what still runs, then its result.
            log.info(
                "final evaluation of iteration %d: %s samples",
                pl_module.iteration,
                f"{final or self.evaluator.n_samples:,}",
            )
        metrics = self.run(trainer, pl_module, n_samples=final)
        if metrics:
            log.info("final %s", "; ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def run(self, trainer: L.Trainer, pl_module: Any, n_samples: int | None = None) -> dict:
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
                n_samples=n_samples,
            )
            if n_samples is not None and not results["protocol"].get("comparable", True):
                log.warning(
                    "the final evaluation used %d samples: not comparable with the papers; set "
                    "callbacks.evaluation.final_n_samples to the protocol's count",
                    n_samples,
                )
            metrics = flat_metrics(results)
            pl_module.log_iteration_metrics(metrics)
        self._keep_best(trainer, metrics)
        return metrics

    def _keep_best(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        path, key = self.best_path, self.monitor
        if path is None or key is None:
            return
        value = trainer.strategy.broadcast(metrics.get(key, math.nan), src=0)
        direction = registry.direction(key) or registry.MINIMIZE
        if is_better(value, self.best.get(key), direction):
            self.best[key] = value
            # Every rank calls save_checkpoint (it may synchronise); only rank 0 writes.
            atomic_save_checkpoint(trainer, path)

    def _generate(self, pl_module: Any):
        return functools.partial(pl_module.generate, ema=self.ema)

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = {str(k): float(v) for k, v in state_dict.get("best", {}).items()}
        # Checkpoints written before the registry kept only the best FID.
        if "best_fid" in state_dict and math.isfinite(state_dict["best_fid"]):
            self.best.setdefault("val/fid", float(state_dict["best_fid"]))
