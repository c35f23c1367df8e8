"""Checkpoints every N GAN iterations plus an always-current `last.ckpt`, written atomically;
on SIGTERM or SIGUSR1 (a scheduler's preemption notice) a last checkpoint and a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from ganforge import checkpoint
from ganforge.errors import CheckpointError, NonFiniteWeightsError, check_int
from ganforge.nan_guard import NAN_REMEDIES

log = logging.getLogger("ganforge")

# Weights beyond this magnitude count as diverged: a working GAN's are O(1)-O(10); a diverging one
# jumps by orders of magnitude in a step or two (2 -> 1,400 -> NaN on the 2-D ring with SGD at
# lr 0.3) and can reach 1e30 while still finite. A heuristic, used only to word the message after
# a non-finite stop.
DIVERGED_WEIGHT = 100.0

# SIGTERM: what schedulers and `kill` send; SIGUSR1: SLURM's early warning (`--signal=USR1@90`).
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class IterationCheckpoint(L.Callback):
    def __init__(
        self,
        dirpath: str,
        every_n_iters: int = 1000,
        save_last: bool = True,
        save_on_signal: bool = True,
    ) -> None:
        check_int("callbacks.checkpoint.every_n_iters", every_n_iters)
        self.dirpath = Path(dirpath)
        self.every_n_iters = every_n_iters
        self.save_last = save_last
        self.save_on_signal = save_on_signal
        self._last_saved = -1
        self.received_signal: int | None = None
        self._previous_handlers: dict[int, object] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler (which would stop
        # with an exception and no checkpoint), so ours replaces it for the run.
        if not self.save_on_signal or threading.current_thread() is not threading.main_thread():
            return
        for name in STOP_SIGNALS:
            if (signum := getattr(signal, name, None)) is not None:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # No I/O in a signal handler: the checkpoint is written after the current iteration.
        self.received_signal = signum

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        requested = self.received_signal is not None
        if trainer.world_size > 1:
            # Every rank must stop at the same iteration (and all take part in the save), even
            # if only one got the signal.
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        return requested

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore_handlers()

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration
        if it % self.every_n_iters == 0 and it != self._last_saved:
            self.save(trainer, pl_module, self.dirpath / f"iter_{it:07d}.ckpt")
        if self.save_on_signal and self._stop_requested(trainer):
            if it != self._last_saved:
                self.save(trainer, pl_module, None)
            name = signal.Signals(self.received_signal).name if self.received_signal else "signal"
            log.warning(
                "%s received: stopped after iteration %d and saved %s; continue with "
                "resume=auto (same paths.log_dir and task_name) or ckpt_path=%s",
                name,
                it,
                self.last_path,
                self.last_path,
            )
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handlers()
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        if pl_module.iteration != self._last_saved:
            self.save(trainer, pl_module, None)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path | None) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteWeightsError(
                f"weights became non-finite at iteration {pl_module.iteration}; not saving them "
                f"over {self.last_path}. {NAN_REMEDIES}"
            )
        targets = [path] if path is not None else []
        if self.save_last:
            targets.append(self.last_path)
        for target in targets:
            atomic_save_checkpoint(trainer, target)
        self._last_saved = pl_module.iteration
        if targets and trainer.is_global_zero:
            upload_to_wandb(trainer, targets[-1], pl_module.iteration)


def upload_to_wandb(trainer: L.Trainer, path: Path, iteration: int) -> None:
    """logger.wandb.log_model=true: the checkpoint as a W&B model artifact (Lightning's own
    upload only follows its ModelCheckpoint, which ganforge does not use)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._log_model:
            import wandb

            run = logger.experiment
            artifact = wandb.Artifact(f"model-{run.id}", type="model")
            artifact.metadata = {"iteration": iteration}
            artifact.add_file(str(path), name="last.ckpt")
            run.log_artifact(artifact, aliases=["latest", f"iter_{iteration}"])


def atomic_save_checkpoint(trainer: L.Trainer, path: Path) -> None:
    """Write to a temporary file and rename: a crash mid-write never leaves a half `last.ckpt`.
    Not metrics/files.atomic_write_bytes: Lightning writes the file itself (every rank takes
    part, rank 0 renames), and train removes stale writes by this fixed `*.ckpt.tmp` name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # weights_only=False: a full, resumable checkpoint (optimizers, loops, callbacks) — and said
    # explicitly, or Lightning logs a line about the default at every save.
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)


def weight_scale(state_dict: dict[str, torch.Tensor]) -> float:
    """The largest |weight| of G, D and G_ema in a checkpoint's state dict (inf for NaN/inf).
    BatchNorm statistics and the fixed noise are not weights and are left out."""
    scale = 0.0
    for key, value in state_dict.items():
        skip = "running_" in key or key.startswith("fixed_")
        if skip or not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        if value.numel() and not torch.isfinite(value).all():
            return float("inf")
        if value.numel():
            scale = max(scale, float(value.abs().max()))
    return scale


def describe_after_divergence(dirpath: str | Path) -> str:
    """What the checkpoints in `dirpath` hold, said after a non-finite-loss stop: whether
    last.ckpt's weights are still sane or had already diverged (finite but huge), and then the
    newest checkpoint whose weights are sane."""
    folder = Path(dirpath)
    last = folder / "last.ckpt"
    if not last.is_file():
        return f"No checkpoint was saved before the stop ({last} does not exist)."
    scales: list[tuple[int, Path, float]] = []
    for path in [last, *sorted(folder.glob("iter_*.ckpt"), reverse=True)]:
        try:
            ckpt = checkpoint.load(path)
        except CheckpointError:
            continue
        scales.append((ckpt.iteration, path, weight_scale(ckpt.raw["state_dict"])))
    if not scales or scales[0][1] != last:
        return f"{last} cannot be read; use checkpoints/iter_*.ckpt of this run."
    it, _, scale = scales[0]
    if scale <= DIVERGED_WEIGHT:
        return (
            f"{last} (iteration {it}, weights up to |w| = {scale:.3g}) holds the last good state "
            f"saved; continue from it with the changes above via ckpt_path={last}."
        )
    what = "non-finite" if scale == float("inf") else f"finite but diverged (|w| up to {scale:.3g})"
    sane = [(i, p, w) for i, p, w in scales[1:] if w <= DIVERGED_WEIGHT and i <= it]
    if sane:
        i, p, w = max(sane, key=lambda entry: entry[0])
        where = (
            f"the newest checkpoint with sane weights is {p} (iteration {i}, |w| up to {w:.3g}); "
            f"continue from it with the changes above via ckpt_path={p}."
        )
    else:
        where = (
            "no checkpoint of this run has sane weights: start a new run with the changes above."
        )
    return f"{last} (iteration {it}) holds weights that are {what}, not a good state; {where}"
