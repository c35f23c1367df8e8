"""CIFAR-10 (3×32×32, 10 classes) from the "python version" pickle batches."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganforge.data.base import InMemoryDataModule, seeded_permutation
from ganforge.data.files import existing, locate, read_bytes
from ganforge.errors import DataError, check_bool, check_int

FOLDER = "cifar-10-batches-py"  # what the official tarball (and torchvision) unpacks to
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → uint8 images (N, 3, 32, 32) and int64 labels (N,).

    The format is a pickled dict {b"data": uint8 (N, 3072) row-major R, G, B planes,
    b"labels": list of N ints}. Unpickling runs code from the file, so only read files you
    trust; this is the format CIFAR ships in.
    """
    path = Path(path)
    try:
        batch = pickle.loads(read_bytes(path), encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32)
    except DataError:
        raise
    except Exception as e:  # unpickling garbage can raise almost anything
        raise DataError(
            f"{path}: not a CIFAR-10 pickle batch ({type(e).__name__}: {e}); delete the folder "
            f"and download or copy it again"
        ) from e
    if len(images) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(
            f"{path}: {len(images)} images but {len(labels)} labels, or labels outside 0..9"
        )
    return images, labels


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images.

    The batches are searched in `root/cifar-10-batches-py` (torchvision's layout) and in `root`
    itself; if missing and `download` is true, torchvision downloads them into `root`.
    """

    name = "cifar10"
    _channels, _image_size, _n_classes = 3, 32, 10

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
            root: folder holding `cifar-10-batches-py`, or torchvision's download root.
            download: fetch the batches through torchvision when they are not found.
            n_samples: keep only this many training images (the first n of a permutation seeded
                by `seed`); the test split is always whole.
            **kwargs: see `InMemoryDataModule`.
        """
        check_bool("data.download", download)
        if n_samples is not None:
            check_int("data.n_samples", n_samples)
        check_int("data.seed", seed, minimum=0)
        self.root, self.download, self.n_samples, self.seed = str(root), download, n_samples, seed
        super().__init__(**kwargs)

    def _fetch(self) -> None:
        import torchvision.datasets  # only needed for a download

        torchvision.datasets.CIFAR10(self.root, train=True, download=True)

    def _files(self, split: str) -> list[Path]:
        """The split's batch files, downloaded first if needed and allowed."""
        names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
        root = Path(self.root).expanduser()
        folder = locate(
            f"CIFAR-10 {split} split",
            names,
            [root / FOLDER, root],
            self.root,
            self.download,
            self._fetch,
            "run once with data.download=true and internet access, or set data.root to the "
            f"folder that contains {FOLDER}/ (the python version from "
            "https://www.cs.toronto.edu/~kriz/cifar.html)",
        )
        return [existing(folder / name) for name in names]

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before `setup`, so DDP ranks don't race
        # to download into the same folder; the tarball holds the test batch too.
        self._files("train")

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        batches = [read_cifar_batch(path) for path in self._files(split)]
        x = torch.from_numpy(np.concatenate([images for images, _ in batches]))
        label = torch.from_numpy(np.concatenate([labels for _, labels in batches]))
        if split == "train" and self.n_samples is not None:
            keep = seeded_permutation(len(x), self.seed)[: self.n_samples]
            x, label = x[keep], label[keep]
        return x, label
