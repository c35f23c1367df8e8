"""`train(cfg)` end to end on the real config tree: every option, every model x loss x data."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import CONF, compose_train
from ganforge.errors import CheckpointError, ConfigError, DataError
from ganforge.train import train

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_resolves(tmp_path: Path, group: str, option: str) -> None:
    cfg = compose_train(tmp_path, f"{group}={option}")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["system"]["_target_"] == "ganforge.system.GANSystem"


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


DATASETS = ["toy_ring", "toy_grid", "mnist5k", "mnist", "fashion_mnist", "cifar10", "image_folder"]
LOSSES = ["minimax", "non_saturating", "lsgan", "hinge", "wgan_gp", "relativistic"]
TINY = {"mlp": ["model.hidden=16", "model.depth=1"], "dcgan": ["model.base_width=4"]}


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("model", ["mlp", "dcgan"])
@pytest.mark.parametrize("loss", LOSSES)
def test_fast_dev_run(tmp_path: Path, data: str, model: str, loss: str) -> None:
    overrides = [
        f"data={data}",
        f"model={model}",
        f"loss={loss}",
        "debug=fast_dev_run",
        "data.batch_size=8",
    ]
    overrides += TINY[model]
    cfg = compose_train(tmp_path, *overrides, *data_overrides(data, tmp_path))
    if model == "dcgan" and data.startswith("toy"):
        with pytest.raises(ConfigError, match=r"data\.image_size"):
            train(cfg)
        return
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


def test_smoke_run_writes_config_checkpoints_samples_and_logs(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=toy_ring", "model=mlp", "debug=smoke")
    metrics = train(cfg)
    assert metrics["train/iterations"] == 4
    assert (tmp_path / "config_resolved.yaml").is_file()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["iter_0000002.ckpt", "iter_0000004.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "iter_0000002.png",
        "iter_0000004.png",
    ]
    assert (tmp_path / "csv" / "metrics.csv").read_text().startswith("step,")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ganforge"]["iteration"] == 4
    assert ckpt["ganforge"]["generator"]["class"] == "ganforge.models.mlp.Generator"


def test_dcgan_sample_grid_is_an_image_grid(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "debug=smoke", "model.base_width=8", "train.max_iters=2")
    train(cfg)
    grid = Image.open(tmp_path / "samples" / "iter_0000002.png")
    # 64 fixed-noise samples of 28 px in an 8 x 8 grid with 2 px padding.
    assert grid.size == (8 * 30 + 2, 8 * 30 + 2)


def test_resume_continues_counter_optimizers_and_fixed_noise(tmp_path: Path) -> None:
    first = compose_train(tmp_path / "a", "data=toy_ring", "model=mlp", "debug=smoke")
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    second = compose_train(
        tmp_path / "b",
        "data=toy_ring",
        "model=mlp",
        "debug=smoke",
        "train.max_iters=8",
        f"ckpt_path={last}",
        "seed=123",  # a different seed must not change the restored fixed noise
    )
    metrics = train(second)
    assert metrics["train/iterations"] == 8
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(resumed["state_dict"]["fixed_z"], saved["state_dict"]["fixed_z"])
    # Adam's step count continued from 4 rather than restarting at 0.
    adam_steps = [s["step"] for s in resumed["optimizer_states"][0]["state"].values()]
    assert all(int(s) == 8 for s in adam_steps)
    steps = [line.split(",")[0] for line in (tmp_path / "b/csv/metrics.csv").read_text().split()]
    assert steps[1:] == ["5", "6", "7", "8"]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "iter_0000006.ckpt",
        "iter_0000008.ckpt",
        "last.ckpt",
    ]


def test_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "ckpt_path=/nonexistent/last.ckpt")
    with pytest.raises(CheckpointError, match=r"ckpt_path=/nonexistent/last\.ckpt"):
        train(cfg)


def test_missing_dataset_names_root_and_download(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=mnist", "data.download=false", "debug=fast_dev_run")
    with pytest.raises(DataError, match=r"data\.root.*data\.download|data\.download.*data\.root"):
        train(cfg)


@pytest.mark.parametrize("size", [16, 48])
def test_unsupported_image_size_names_the_key(tmp_path: Path, size: int) -> None:
    root = tmp_path / "data"
    write_images(root, 8)
    cfg = compose_train(
        tmp_path, "data=image_folder", f"data.root={root}", f"data.image_size={size}"
    )
    with pytest.raises(ConfigError, match=rf"data\.image_size={size}.*supports \[28, 32, 64\]"):
        train(cfg)


def test_endless_run_is_refused(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "train.max_iters=null")
    with pytest.raises(ConfigError, match=r"train\.max_iters"):
        train(cfg)
