"""CIFAR-10 (3×32×32, 10 classes) from the "python version" pickle batches."""

from __future__ import annotations

import io
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


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # How Python 3's protocol-2 pickles spell bytes; no other codec (a lookup imports modules).
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not part of the CIFAR-10 format")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: dicts, lists, strings, bytes, numbers and numpy
    arrays. Any other global (os.system, builtins.open, ...) is refused, so a crafted
    data_batch_* file — e.g. one a checkpoint points data.root at — cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # the official (numpy 1.x era) batches
            ("numpy._core.multiarray", "_reconstruct"),  # numpy 2 pickles, protocols 2-4
            ("numpy.core.numeric", "_frombuffer"),  # protocol 5
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it references {module}.{name}, which a CIFAR-10 batch never holds (refused: "
            "unpickling it could run code)"
        )


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → uint8 images (N, 3, 32, 32) and int64 labels (N,).

    The format is a pickled dict {b"data": uint8 (N, 3072) row-major R, G, B planes,
    b"labels": list of N ints}. It is read with a restricted unpickler (`_BatchUnpickler`), so a
    file that is not such a batch is an error, never code that runs.
    """
    path = Path(path)
    try:
        batch = _BatchUnpickler(io.BytesIO(read_bytes(path)), encoding="bytes").load()
        if not isinstance(batch, dict) or not isinstance(batch.get(b"data"), np.ndarray):
            raise TypeError(f"holds a {type(batch).__name__} without a b'data' array")
        if batch[b"data"].dtype.kind not in "ui":
            raise TypeError(f"its data array has dtype {batch[b'data'].dtype}, not uint8")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32)
    except DataError:
        raise
    except Exception as e:  # unpickling garbage can raise almost anything
        raise DataError(
            f"{path}: not a CIFAR-10 pickle batch ({type(e).__name__}: {e}); delete the folder "
            f"and download or copy it again"
        ) from None
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
