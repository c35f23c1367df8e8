"""The in-memory base every dataset builds on.

A dataset here is small enough (MNIST, CIFAR-10, a folder of thumbnails) to live in memory as one
uint8 tensor, so a training batch is a single tensor index, and the float conversion and the flip
run on the device as one batch op. `load` is all a subclass writes; the base owns split caching,
the DataLoader and the augmentation.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ganforge.data.sampler import ResumableShardedSampler
from ganforge.errors import ConfigError, check_bool, check_int
from ganforge.models.protocols import is_image_data

SPLITS = ("train", "test")


def to_float(x: Tensor) -> Tensor:
    """uint8 images in 0..255 → float32 in [-1, 1], the range of G's tanh output."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [-1, 1] → uint8 in 0..255; out-of-range generator outputs are clamped."""
    return x.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def seeded_permutation(n: int, seed: int) -> Tensor:
    """A permutation of range(n) that depends only on `seed` (not on the global RNG state)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class TensorDictDataset(Dataset):
    """Rows of in-memory tensors, served as `{"x": ..., "label": ...}` dicts."""

    def __init__(self, x: Tensor, label: Tensor | None = None) -> None:
        assert label is None or len(label) == len(x)
        self.x, self.label = x, label

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        # The DataLoader hands over a whole batch of indices: one gather per tensor instead of
        # batch_size Python calls followed by a collate.
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {"x": self.x[idx]}
        if self.label is not None:
            batch["label"] = self.label[idx]
        return batch


def pass_through(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """collate_fn: `__getitems__` already built the batch. Module-level so workers can pickle it."""
    return batch


class InMemoryDataModule(L.LightningDataModule):
    """Base DataModule: a subclass implements `load(split)`; everything else lives here.

    Config files repeat the dataset's shape facts (`data.channels`, `data.image_size`,
    `data.n_classes`) so model configs can interpolate them; the constructor accepts those keys and
    checks them against the dataset, so an override like `data.channels=3` on MNIST fails loudly
    instead of building a model that cannot eat the data.
    """

    # Shape facts, known from the config before any data is read: models are built from them
    # before `setup`. Subclasses override these (as class constants or in __init__).
    name: str = "data"
    _channels: int | None = None
    _image_size: int | None = None
    _n_classes: int | None = None

    def __init__(
        self,
        *,
        batch_size: int,
        batches_per_step: int = 1,
        flip: bool = False,
        num_workers: int = 0,
        drop_last: bool = True,
        name: str | None = None,
        channels: int | None = None,
        image_size: int | None = None,
        n_classes: int | None = None,
        shuffle_seed: int = 0,
    ) -> None:
        """
        Args:
            batch_size: samples per discriminator step.
            batches_per_step: the loader yields `batch_size * batches_per_step` samples, because
                the GAN system splits one loader batch into its `n_critic` discriminator chunks
                (train.py passes `system.n_critic`; it is not a data setting).
            flip: random horizontal flip per sample (images only), applied on the device.
            num_workers, drop_last: passed to the DataLoader.
            name: a label for logs and run directories (defaults to the dataset's own).
            channels, image_size, n_classes: the config's copy of the dataset's shape facts;
                None means "whatever the dataset has", anything else must match it.
            shuffle_seed: the training order of epoch e is a permutation seeded by
                shuffle_seed + e (train.py passes the run's `seed`).
        """
        super().__init__()
        if name is not None:
            self.name = name
        check_int("data.batch_size", batch_size)
        check_int("batches_per_step", batches_per_step)
        check_int("data.num_workers", num_workers, minimum=0)
        check_bool("data.flip", flip)
        check_bool("data.drop_last", drop_last)
        if flip and not self.is_image:
            raise ConfigError(
                f"data.flip=true only applies to images, but data={self.name} is 2-D points"
            )
        self.batch_size, self.batches_per_step = batch_size, batches_per_step
        self.flip, self.num_workers, self.drop_last = flip, num_workers, drop_last
        for key, declared in (
            ("channels", channels),
            ("image_size", image_size),
            ("n_classes", n_classes),
        ):
            if declared is not None and declared != (actual := getattr(self, key)):
                raise ConfigError(
                    f"data.{key}={declared} but data={self.name} has {key}={actual}; "
                    f"drop the override (it is fixed by the dataset)"
                )
        self._splits: dict[str, tuple[Tensor, Tensor | None]] = {}
        self.shuffle_seed = shuffle_seed
        self._sampler: ResumableShardedSampler | None = None
        # Training batches taken so far: saved in the checkpoint so a resume continues the data
        # stream where it stopped (see ResumableShardedSampler).
        self._consumed = 0

    # --- shape facts --------------------------------------------------------------------------

    @property
    def channels(self) -> int | None:
        return self._channels

    @property
    def image_size(self) -> int | None:
        return self._image_size

    @property
    def n_classes(self) -> int | None:
        return self._n_classes

    @property
    def is_image(self) -> bool:
        return is_image_data(self._channels)

    # --- data ---------------------------------------------------------------------------------

    def load(self, split: str) -> tuple[Tensor, Tensor | None]:
        """Read one split: uint8 images (N, C, H, W) or float32 points (N, D), and int64 labels
        (N,) or None. Called at most once per split per instance."""
        raise NotImplementedError

    def no_test_split(self, fix: str) -> ConfigError:
        """The error for datasets without a test split; `fix` says what to do instead."""
        return ConfigError(f"data={self.name} has no test split; {fix}")

    def split(self, split: str) -> tuple[Tensor, Tensor | None]:
        """The cached (x, label) of a split, loaded on first use."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} must be one of {SPLITS}")
        if split not in self._splits:
            x, label = self.load(split)
            assert x.dtype == (torch.uint8 if self.is_image else torch.float32), x.dtype
            assert label is None or (label.dtype == torch.int64 and len(label) == len(x))
            self._splits[split] = (x, label)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        # Lightning calls setup once per stage (and per process): the cache makes repeats free.
        self.split("train")

    def train_dataloader(self) -> DataLoader:
        x, label = self.split("train")
        return self.resumable_loader(TensorDictDataset(x, label), len(x))

    def resumable_loader(
        self,
        dataset: Dataset,
        n: int,
        sampler_class: type[ResumableShardedSampler] = ResumableShardedSampler,
        sampler_drop_last: bool | None = None,
    ) -> DataLoader:
        """The training loader over `dataset`'s `n` samples (or stream positions): batches of
        batch_size * batches_per_step from a resumable, rank-sharded `sampler_class` whose
        `drop_last` is `sampler_drop_last` (default data.drop_last). Subclasses with their own
        dataset (Stacked MNIST) call it instead of repeating it."""
        loader_batch = self.batch_size * self.batches_per_step
        if self.drop_last and n < loader_batch:
            raise ConfigError(
                f"data.batch_size*system.n_critic={loader_batch} is more than the {n} "
                f"training samples of data={self.name}, so every batch would be dropped; lower "
                "data.batch_size or system.n_critic, or set data.drop_last=false"
            )
        # Our own sampler shards by rank (the trainer configs set use_distributed_sampler=false)
        # and resumes mid-epoch; its order depends only on (shuffle_seed, epoch).
        trainer = self.trainer
        self._sampler = sampler_class(
            n,
            loader_batch,
            seed=self.shuffle_seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            drop_last=self.drop_last if sampler_drop_last is None else sampler_drop_last,
        )
        self._sampler.consumed = self._consumed
        return DataLoader(
            dataset,
            batch_size=loader_batch,
            sampler=self._sampler,
            # The loader's own seed draw comes from here, not from the global RNG, which
            # therefore moves only with training itself (exact resume).
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            collate_fn=pass_through,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        if self.trainer is not None and self.trainer.training and self._sampler is not None:
            # Counted here, when a batch goes to training, not when the loader prefetches it.
            self._consumed += 1
            self._sampler.consumed = self._consumed
        # Runs on the device, so the uint8 → float conversion costs a quarter of the host→device
        # traffic and the flip is one vectorised op instead of per-sample PIL work.
        if not self.is_image or batch["x"].dtype != torch.uint8:
            return batch
        x = to_float(batch["x"])
        training = self.trainer is None or self.trainer.training
        if self.flip and training:
            mask = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return {**batch, "x": x}

    def state_dict(self) -> dict[str, int]:
        # Primitives only: the checkpoint stays loadable with weights_only=True.
        return {"batches_consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Lightning restores this before it builds the dataloaders.
        self._consumed = int(state.get("batches_consumed", 0))

    def real_samples(self, n: int | None, split: str = "train", seed: int = 0) -> Tensor:
        """Up to n real samples (uint8 images or float points): the first n of a permutation
        seeded by `seed`, so reference statistics are reproducible. n=None takes the whole split."""
        if n is not None:
            check_int("n", n)
        x, _ = self.split(split)
        return x[seeded_permutation(len(x), seed)[:n]]
