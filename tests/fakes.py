"""Offline stand-ins for the datasets that live in files: every fake-data writer the tests use.

`data_overrides(name, tmp_path)` writes the files `conf/data/<name>.yaml` reads (chosen by the
config's `_target_` class, so a new config of an existing reader needs nothing here) and returns
the overrides pointing the config at them. A dataset that reads a new kind of file adds its writer
to `WRITERS`; one that reads no files (bundled or synthetic) needs nothing.

`FID` is torchmetrics' FID metric computed with ganforge's `frechet_distance`: the tests check the
distance (test_fid) and the Inception network (test_inception) against torchmetrics through it;
ganforge itself never uses a torchmetrics `Metric`.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from ganforge.data.cifar import CIFAR10DataModule
from ganforge.data.image_folder import ImageFolderDataModule
from ganforge.data.mnist import IDXDataModule
from ganforge.metrics.fid import frechet_distance
from ganforge.train import config_dir

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """`array` as an IDX file of unsigned bytes (`.gz`-compressed when `gz`); returns its path."""
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 6, gz: bool = True) -> None:
    """MNIST's four IDX files (random 28x28 digits, labels cycling 0..9) in `folder`."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


def write_cifar_batches(folder: Path, per_batch: int = 3) -> None:
    """CIFAR-10's six pickled batches (random 3x32x32 images) directly in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_BATCHES:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"batch_label": name.encode(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def write_cifar(root: Path, per_batch: int = 3) -> None:
    """CIFAR-10 in torchvision's layout under `root` (what `data.root` names)."""
    write_cifar_batches(root / CIFAR_FOLDER, per_batch)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_image_folder(root: Path, n: int, size: tuple[int, int] = (40, 48)) -> None:
    """n random RGB images of `size` (h, w) in two class folders, class0/ and class1/."""
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / f"class{i % 2}" / f"{i}.png", rng.integers(0, 256, (*size, 3), np.uint8))


def _mnist(root: Path) -> list[str]:
    write_mnist(root, n_train=64)
    return [f"data.root={root}", "data.download=false"]


def _cifar(root: Path) -> list[str]:
    write_cifar(root, 32)
    return [f"data.root={root}", "data.download=false"]


def _image_folder(root: Path) -> list[str]:
    write_image_folder(root, 40)
    return [f"data.root={root}", "data.image_size=32"]


# The data module class a config instantiates -> writer of its files (under `root`) returning the
# overrides that point the config at them. Subclasses share their base's writer.
WRITERS: dict[type, Callable[[Path], list[str]]] = {
    IDXDataModule: _mnist,
    CIFAR10DataModule: _cifar,
    ImageFolderDataModule: _image_folder,
}


def data_options(conf: Path | None = None) -> list[str]:
    """Every `data=` option of the config tree."""
    return sorted(p.stem for p in ((conf or config_dir()) / "data").glob("*.yaml"))


def data_overrides(data: str, tmp_path: Path, conf: Path | None = None) -> list[str]:
    """Write fake files for `conf/data/<data>.yaml` under tmp_path/data; its overrides."""
    target = OmegaConf.load((conf or config_dir()) / "data" / f"{data}.yaml")["_target_"]
    cls = get_class(target)
    writer = next((w for base, w in WRITERS.items() if issubclass(cls, base)), None)
    return writer(tmp_path / "data") if writer is not None else []


# --- a stand-in for the Inception network ---------------------------------------------------------
class FakeExtractor:
    """A deterministic 8-d "Inception" that counts how many images it has seen."""

    num_features = 8
    has_logits = False
    device = torch.device("cpu")

    def __init__(self, weights_sha256: str = "f" * 64) -> None:
        self.weights_sha256 = weights_sha256
        self.images_seen = 0
        g = torch.Generator().manual_seed(0)
        self.projection = torch.randn(3 * 4 * 4, self.num_features, generator=g)

    def protocol_fields(self) -> dict[str, Any]:
        return {
            "backbone": "fake",
            "resize": "area4",
            "antialias": False,
            "weights_sha256": self.weights_sha256,
        }

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        assert images.dtype == torch.uint8
        self.images_seen += images.shape[0]
        small = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4)
        return small.expand(-1, 3, -1, -1).flatten(1) @ self.projection, None

    def to(self, device: torch.device | str) -> FakeExtractor:
        return self


# --- Stacked MNIST (#21) ----------------------------------------------------------------------
from ganforge.data.stacked_mnist import StackedMNISTDataModule  # noqa: E402


def _stacked_mnist(root: Path) -> list[str]:
    write_mnist(root, n_train=64)
    # 32 px: the size every ganforge image model builds (resnet takes no 28), and DDGAN's.
    return [
        f"data.root={root}",
        "data.download=false",
        "data.source=torchvision",
        "data.image_size=32",
    ]


WRITERS[StackedMNISTDataModule] = _stacked_mnist


class FID(FrechetInceptionDistance):
    """torchmetrics' FrechetInceptionDistance, whose ``compute`` uses ``frechet_distance``.

    Same states (``real_features_sum``, ``real_features_cov_sum``, ``real_features_num_samples``,
    and ``fake_*``, float64), same ``update`` and ``feature=`` handling, same value (tests check
    1e-6 agreement). Why override: torchmetrics takes ``eigvals`` of the non-symmetric product
    S_real S_fake, which on a CPU takes 20-90 s for 2048-d covariances from a few hundred samples
    (rank-deficient: slow to converge) and is noisier; the symmetric route takes seconds.
    """

    def compute(self) -> Tensor:
        stats = []
        for prefix in ("real", "fake"):
            n = getattr(self, f"{prefix}_features_num_samples")
            if n < 2:
                raise RuntimeError("FID needs at least 2 real and 2 fake samples")
            mean = getattr(self, f"{prefix}_features_sum") / n
            cov_sum = getattr(self, f"{prefix}_features_cov_sum")
            stats += [mean, (cov_sum - n * torch.outer(mean, mean)) / (n - 1)]
        return torch.tensor(frechet_distance(*stats), dtype=torch.float64)
