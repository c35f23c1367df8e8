"""Test helper, run as a script: `python tests/ddp_dump.py OUT override...`.

Trains through ganforge's own `train(cfg)` (composed from conf/ with the overrides) and has every
rank save what the DDP test compares: its final state dict, its first real batch and its first
latents, to OUT/rank{r}.pt. Lightning's DDP launcher re-runs this script once per extra rank, so the
callback is found by module name (`ddp_dump.DumpState`) in each of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ganforge.train import config_dir, train


class DumpState(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.first: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        draw = pl_module.training_noise

        def recording(n: int):
            z, y = draw(n)
            self.first.setdefault("z", z.clone())
            return z, y

        pl_module.training_noise = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.first.setdefault("x", batch["x"].clone())

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        record = {"state": state, "iteration": pl_module.iteration, **self.first}
        torch.save(record, self.path / f"rank{trainer.global_rank}.pt")


def main() -> None:
    out, *overrides = sys.argv[1:]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = out
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
        cfg.callbacks = {"dump": {"_target_": "ddp_dump.DumpState", "path": out}}
    train(cfg)


if __name__ == "__main__":
    main()
