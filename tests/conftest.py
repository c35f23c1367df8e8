"""Shared helpers: compose the real config tree, and build small systems without Hydra."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from ganforge.data.toy import ToyRingDataModule
from ganforge.losses import GANLoss
from ganforge.models import mlp
from ganforge.system import GANSystem
from ganforge.train import config_dir

CONF = config_dir()


def compose_train(tmp_path: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """The composed config a `ganforge-train ...` call would see, writing under `tmp_path`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    with open_dict(cfg):
        # ${hydra:runtime.output_dir} only resolves inside a Hydra app; tests pin it.
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
    return cfg


def toy_system(**kwargs) -> tuple[GANSystem, ToyRingDataModule]:
    """A tiny MLP GAN on the 8-mode ring, built directly from the classes."""
    n_critic = kwargs.get("n_critic", 1)
    dm = ToyRingDataModule(batch_size=32, batches_per_step=n_critic, n_samples=2048)
    opt = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    args = dict(
        generator=mlp.Generator(z_dim=8, hidden=32, depth=2, dim=2),
        discriminator=mlp.Discriminator(hidden=32, depth=2, dim=2),
        loss=GANLoss("non_saturating"),
        g_optimizer=opt,
        d_optimizer=opt,
        log_every=1,
    )
    args.update(kwargs)
    return GANSystem(**args), dm


def quiet_trainer(**kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    args.update(kwargs)
    return L.Trainer(**args)


@pytest.fixture(autouse=True)
def _seed() -> None:
    L.seed_everything(0, verbose=False)
