"""What a GANSystem adds to Lightning's checkpoint, and takes back from it, for an exact resume.

Lightning saves and restores the weights, the optimizers, the lr schedulers and the callbacks'
states; the system adds its record (`checkpoint.write_record`: the networks as built, the GAN
iteration, the training noise stream, the global RNG states and the W&B run id). The global RNGs
are put back only when training starts, after Lightning has built the loaders, so that nothing
between the checkpoint and the first step moves the streams.
"""

from __future__ import annotations

from typing import Any

from ganforge.checkpoint import RECORD_KEY, resume_state, write_record
from ganforge.loggers import wandb_run_id
from ganforge.rng import set_rng_states


class ResumeRecord:
    """The system's part of its checkpoint: `save` and `load` from its checkpoint hooks,
    `restore_rng` from its on_train_start."""

    def __init__(self) -> None:
        self._pending_rng: dict[str, Any] | None = None

    def save(self, system: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = write_record(
            system.G,
            system.D,
            iteration=system.iteration,
            loss=system.loss.name,
            has_ema=system.G_ema is not None,
            conditional=system.conditional,
            n_classes=system.n_classes,
            meta=system.hparams.meta or {},
            noise_rng=system.noise.get_state(),
            wandb_run_id=wandb_run_id(system.loggers),
        )

    def load(self, system: Any, checkpoint: dict[str, Any]) -> None:
        state = resume_state(checkpoint.get(RECORD_KEY, {}))
        system.iteration = state.iteration
        if state.noise_rng is not None:  # checkpoints from before exact resume lack it
            system.noise.set_state(state.noise_rng)
        self._pending_rng = state.rng

    def restore_rng(self) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
