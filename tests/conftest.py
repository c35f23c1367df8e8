"""Shared helpers: compose the real config tree, and build small systems without Hydra."""

from __future__ import annotations

import functools
import gzip
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

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


# --- offline stand-ins for the downloadable datasets ---------------------------------------------
def write_idx(folder: Path, prefix: str, n: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([0, 0, 8, 3], np.uint8).tobytes())
        f.write(np.array([n, 28, 28], ">i4").tobytes() + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([0, 0, 8, 1], np.uint8).tobytes())
        f.write(np.array([n], ">i4").tobytes() + labels.tobytes())


def write_cifar(root: Path, n: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def write_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(sub / f"{i}.png")


def data_overrides(data: str, tmp_path: Path) -> list[str]:
    root = tmp_path / "data"
    if data in ("mnist", "fashion_mnist"):
        write_idx(root, "train", 64)
        return [f"data.root={root}", "data.download=false"]
    if data == "cifar10":
        write_cifar(root, 32)
        return [f"data.root={root}", "data.download=false"]
    if data == "image_folder":
        write_images(root, 40)
        return [f"data.root={root}", "data.image_size=32"]
    return []


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
