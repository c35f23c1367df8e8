"""The data layer: readers against files written here, modules against their interface, and every
conf/data/*.yaml through hydra.utils.instantiate."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fakes import data_options, write_cifar_batches, write_idx, write_mnist, write_png
from ganforge.data import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    InMemoryDataModule,
    MNIST5kDataModule,
    MNISTDataModule,
    ToyGridDataModule,
    ToyRingDataModule,
    to_float,
    to_uint8,
)
from ganforge.data.mnist import read_idx
from ganforge.data.sampler import ResumableShardedSampler
from ganforge.errors import ConfigError, DataError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """cats/ (2 images, one nested deeper) and dogs/ (1 image), of different sizes and modes.
    Every image is 2:1 wide, left half red and right half blue, so the centre crop is checkable."""
    root = tmp_path / "images"
    for rel, (h, w) in {
        "cats/a.png": (16, 32),
        "cats/deeper/b.png": (24, 48),
        "dogs/c.png": (40, 80),
    }.items():
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2, 0] = 255
        img[:, w // 2 :, 2] = 255
        write_png(root / rel, img)
    return root


# --- conversion helpers ---------------------------------------------------------------------


def test_to_float_and_back_is_exact_on_all_levels():
    x = torch.arange(256, dtype=torch.uint8)
    f = to_float(x)
    assert f.dtype == torch.float32
    assert f[0] == -1 and f[255] == 1
    assert torch.equal(to_uint8(f), x)
    # Rounding, not truncation: a value a hair below a level maps back to that level.
    assert torch.equal(to_uint8(f - 1e-3), x.clamp(min=0))


def test_to_uint8_clamps_out_of_range():
    assert to_uint8(torch.tensor([-3.0, 1.5, 0.0])).tolist() == [0, 255, 128]


# --- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "data.batch_size=0 must be a positive integer"),
        ({"batch_size": True}, "data.batch_size=True"),
        ({"batch_size": 8, "batches_per_step": 0}, "batches_per_step=0"),
        ({"batch_size": 8, "num_workers": -1}, "data.num_workers=-1"),
        ({"batch_size": 8, "flip": True}, "data.flip=true only applies to images"),
        ({"batch_size": 8, "channels": 3}, "data.channels=3"),
        ({"batch_size": 8, "n_classes": 7}, "data.n_classes=7"),
        ({"batch_size": 8, "std": 0.0}, "data.std=0.0"),
        ({"batch_size": 8, "dim": 3}, "data.dim=3"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("*", r"\*")):
        ToyRingDataModule(**kwargs)


def test_declared_shape_facts_must_match_the_dataset():
    with pytest.raises(ConfigError, match=r"data\.channels=3 but data=mnist5k has channels=1"):
        MNIST5kDataModule(batch_size=8, channels=3)
    with pytest.raises(ConfigError, match=r"data\.image_size=32"):
        MNISTDataModule(root="x", batch_size=8, image_size=32)
    with pytest.raises(ConfigError, match=r"data\.n_classes=24"):
        ToyGridDataModule(batch_size=8, n_classes=24)
    ToyGridDataModule(batch_size=8, name="toy_grid", channels=None, n_classes=25)  # agrees: fine


def test_batch_larger_than_dataset_is_a_config_error():
    dm = ToyRingDataModule(batch_size=64, batches_per_step=2, n_samples=100)
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"data\.batch_size\*system\.n_critic=128"):
        dm.train_dataloader()
    dm.drop_last = False
    assert len(dm.train_dataloader()) == 1


# --- toy data -------------------------------------------------------------------------------


def test_toy_ring_modes_are_on_the_circle():
    dm = ToyRingDataModule(batch_size=8, radius=3.0)
    assert dm.modes.shape == (8, 2) and dm.modes.dtype == torch.float32
    torch.testing.assert_close(dm.modes.norm(dim=1), torch.full((8,), 3.0))
    angles = torch.atan2(dm.modes[:, 1], dm.modes[:, 0]).remainder(2 * torch.pi).sort().values
    torch.testing.assert_close(angles.diff(), torch.full((7,), torch.pi / 4))
    assert dm.n_classes == 8 and not dm.is_image and dm.channels is None and dm.image_size is None


def test_toy_grid_modes_span_minus_four_to_four():
    dm = ToyGridDataModule(batch_size=8)
    assert dm.modes.shape == (25, 2) and dm.std == 0.05 and dm.n_classes == 25
    assert sorted(set(dm.modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(m) for m in dm.modes.tolist()}) == 25  # all distinct


@pytest.mark.parametrize("module", [ToyRingDataModule, ToyGridDataModule])
def test_toy_points_lie_near_their_labelled_mode(module):
    dm = module(batch_size=8, n_samples=5000, seed=3)
    x, label = dm.split("train")
    assert x.shape == (5000, 2) and x.dtype == torch.float32 and label.dtype == torch.int64
    dist = (x - dm.modes[label]).norm(dim=1)
    assert dist.max() < 6 * dm.std  # 2-D Gaussian: P(r > 6σ) = e^-18
    assert dist.mean() > 0.5 * dm.std  # it is noisy, not the centres themselves
    assert label.bincount(minlength=len(dm.modes)).min() > 0  # every mode is used
    # Test split: a different draw of the same mixture.
    x_test, _ = dm.split("test")
    assert not torch.equal(x, x_test)


def test_toy_data_depends_only_on_seed():
    a = ToyGridDataModule(batch_size=8, n_samples=100, seed=1).split("train")[0]
    torch.manual_seed(123)  # global RNG state must not matter
    b = ToyGridDataModule(batch_size=8, n_samples=100, seed=1).split("train")[0]
    c = ToyGridDataModule(batch_size=8, n_samples=100, seed=2).split("train")[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- the loader and the device-side transform -----------------------------------------------


def modules_for_loader(tmp_path: Path) -> dict[str, InMemoryDataModule]:
    write_cifar_batches(tmp_path / "cifar" / "cifar-10-batches-py", per_batch=4)
    write_mnist(tmp_path / "mnist" / "MNIST" / "raw", n_train=20)
    folder = tmp_path / "folder"
    for i in range(8):
        write_png(folder / f"{i}.png", np.full((10, 12, 3), i * 30, np.uint8))
    kw = {"batch_size": 3, "batches_per_step": 2}
    return {
        "toy_ring": ToyRingDataModule(n_samples=50, **kw),
        "cifar10": CIFAR10DataModule(root=str(tmp_path / "cifar"), download=False, **kw),
        "mnist": MNISTDataModule(root=str(tmp_path / "mnist"), download=False, **kw),
        "image_folder": ImageFolderDataModule(root=str(folder), image_size=8, **kw),
    }


@pytest.mark.parametrize(
    ("key", "shape", "dtype", "has_label"),
    [
        ("toy_ring", (6, 2), torch.float32, True),
        ("cifar10", (6, 3, 32, 32), torch.uint8, True),
        ("mnist", (6, 1, 28, 28), torch.uint8, True),
        ("image_folder", (6, 3, 8, 8), torch.uint8, False),
    ],
)
def test_loader_batch_is_batch_size_times_batches_per_step(tmp_path, key, shape, dtype, has_label):
    dm = modules_for_loader(tmp_path)[key]
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(dm.split("train")[0]) // 6  # drop_last
    batch = batches[0]
    assert set(batch) == ({"x", "label"} if has_label else {"x"})
    assert batch["x"].shape == shape and batch["x"].dtype == dtype
    if has_label:
        assert batch["label"].shape == (6,) and batch["label"].dtype == torch.int64
    # ganforge's own sampler: shards by rank itself and resumes mid-epoch.
    assert isinstance(loader.sampler, ResumableShardedSampler)
    assert loader.batch_size == 6


def test_sampler_shards_by_rank_into_the_single_process_global_batch():
    ranks = [list(ResumableShardedSampler(21, 3, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    single = list(ResumableShardedSampler(21, 6, seed=5))
    assert len(ranks[0]) == len(ranks[1]) == 9 and not set(ranks[0]) & set(ranks[1])
    for k in range(3):
        both = ranks[0][3 * k : 3 * k + 3] + ranks[1][3 * k : 3 * k + 3]
        assert sorted(both) == sorted(single[6 * k : 6 * k + 6])


def test_sampler_continues_where_training_stopped_taking_batches():
    sampler = ResumableShardedSampler(20, 3, seed=1)
    epoch0 = list(sampler)
    assert len(epoch0) == 18 and sampler.batches_per_epoch == 6
    sampler.consumed = 2
    assert list(sampler) == epoch0[6:]
    sampler.consumed = 6  # the next data epoch: a new order, seeded by seed + 1
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and epoch1 == list(ResumableShardedSampler(20, 3, seed=2))


def test_getitems_matches_per_item_indexing():
    dm = ToyGridDataModule(batch_size=4, n_samples=50)
    dm.setup()
    dataset = dm.train_dataloader().dataset
    indices = [7, 0, 42, 7]
    batch = dataset.__getitems__(indices)
    items = [dataset[i] for i in indices]
    assert len(dataset) == 50
    assert torch.equal(batch["x"], torch.stack([item["x"] for item in items]))
    assert torch.equal(batch["label"], torch.stack([item["label"] for item in items]))
    assert items[0]["x"].shape == (2,)


def test_loader_works_with_worker_processes():
    dm = ToyRingDataModule(batch_size=10, n_samples=40, num_workers=1)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and batches[0]["x"].shape == (10, 2)
    seen = torch.cat([b["x"] for b in batches])
    assert torch.equal(
        seen[seen[:, 0].argsort()], dm.split("train")[0][dm.split("train")[0][:, 0].argsort()]
    )


def image_module(flip: bool) -> InMemoryDataModule:
    return ImageFolderDataModule(root="unused", image_size=8, batch_size=4, flip=flip)


def test_on_after_batch_transfer_maps_uint8_to_minus_one_one():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    x[0] = 0
    x[1] = 255
    label = torch.arange(16)
    out = image_module(flip=False).on_after_batch_transfer({"x": x, "label": label}, 0)
    assert out["x"].dtype == torch.float32
    assert out["x"].min() == -1 and out["x"].max() == 1
    torch.testing.assert_close(out["x"], x.float() / 127.5 - 1)
    assert out["label"] is label


def test_flip_mirrors_some_samples_exactly_and_leaves_the_rest():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)  # noise: no sample is symmetric
    out = image_module(flip=True).on_after_batch_transfer({"x": x}, 0)["x"]
    plain, mirrored = to_float(x), to_float(x).flip(-1)
    is_plain = (out == plain).flatten(1).all(1)
    is_mirrored = (out == mirrored).flatten(1).all(1)
    assert (is_plain ^ is_mirrored).all()  # each sample is exactly one of the two
    assert 10 < is_mirrored.sum() < 54  # Bernoulli(0.5) over 64 samples


def test_points_pass_through_the_transfer_hook_unchanged():
    x = torch.randn(8, 2)
    out = ToyRingDataModule(batch_size=4).on_after_batch_transfer({"x": x}, 0)
    assert out["x"] is x


class _Probe(L.LightningModule):
    """Records the batches Lightning hands to training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch)
        return self.weight * batch["x"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_applies_the_transfer_hook(image_tree):
    dm = ImageFolderDataModule(root=str(image_tree), image_size=8, batch_size=2, flip=True)
    probe = _Probe()
    trainer = L.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, datamodule=dm)
    (batch,) = probe.seen
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (2, 3, 8, 8)
    assert batch["x"].min() >= -1 and batch["x"].max() <= 1


# --- setup and real_samples -----------------------------------------------------------------


def test_setup_loads_the_train_split_once(monkeypatch):
    dm = ToyRingDataModule(batch_size=4, n_samples=20)
    calls = []
    original = dm.load
    monkeypatch.setattr(dm, "load", lambda split: calls.append(split) or original(split))
    dm.setup("fit")
    dm.setup("validate")
    dm.train_dataloader()
    dm.real_samples(5)
    assert calls == ["train"]


def test_real_samples_are_reproducible():
    dm = ToyGridDataModule(batch_size=4, n_samples=200)
    a, b = dm.real_samples(50, seed=1), dm.real_samples(50, seed=1)
    assert a.shape == (50, 2) and torch.equal(a, b)
    assert not torch.equal(a, dm.real_samples(50, seed=2))
    assert torch.equal(dm.real_samples(10, seed=1), a[:10])  # a prefix, not a new draw
    assert dm.real_samples(None).shape == (200, 2)
    assert dm.real_samples(10_000).shape == (200, 2)  # capped at the split size
    assert not torch.equal(dm.real_samples(50, split="test", seed=1), a)
    with pytest.raises(ConfigError, match="split='val'"):
        dm.real_samples(5, split="val")


# --- mnist5k --------------------------------------------------------------------------------


def test_mnist5k_digits():
    dm = MNIST5kDataModule(batch_size=8)
    assert (dm.channels, dm.image_size, dm.n_classes, dm.is_image) == (1, 28, 10, True)
    x, label = dm.split("train")
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.uint8
    assert label.dtype == torch.int64 and label.bincount().tolist() == [500] * 10
    assert x.max() == 255 and x.float().mean() > 20  # real digits, not an empty canvas
    with pytest.raises(ConfigError, match=r"data=mnist5k has no test split.*data\.holdout"):
        dm.split("test")


def test_mnist5k_holdout_is_a_disjoint_deterministic_split():
    dm = MNIST5kDataModule(batch_size=8, holdout=1000, seed=1)
    (train, _), (test, test_label) = dm.split("train"), dm.split("test")
    assert len(train) == 4000 and len(test) == 1000
    assert test_label.bincount(minlength=10).min() > 50  # shuffled, not the sorted tail
    # Disjoint: no held-out digit appears among the training digits.
    train_keys = {row.tobytes() for row in train.flatten(1).numpy()}
    assert not any(row.tobytes() in train_keys for row in test.flatten(1).numpy())
    again = MNIST5kDataModule(batch_size=8, holdout=1000, seed=1).split("test")[0]
    assert torch.equal(test, again)


# --- IDX files, MNIST and Fashion-MNIST ------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images, gz)
    assert np.array_equal(read_idx(path, 3), images)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "labels", labels, gz), 1), labels)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(5), "magic number 00000801"),
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28) + bytes(100), "truncated"),
        (b"\x00\x00\x08", "magic number"),
        (b"\x1f\x8b" + b"not really gzip", "cannot read"),
    ],
)
def test_corrupt_idx_file_is_a_data_error_naming_it(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as error:
        read_idx(path, 3)
    assert str(path) in str(error.value)


def test_mnist_reads_torchvision_layout_and_limits_n_samples(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", n_train=30, n_test=6, gz=True)
    full = MNISTDataModule(root=str(tmp_path), download=False, batch_size=4)
    x, label = full.split("train")
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.uint8
    assert label.tolist() == [i % 10 for i in range(30)]
    assert full.split("test")[0].shape == (6, 1, 28, 28)
    part = MNISTDataModule(root=str(tmp_path), download=False, n_samples=7, seed=1, batch_size=4)
    px, plabel = part.split("train")
    assert px.shape == (7, 1, 28, 28)
    # The kept images are real rows of the full set, with their own labels.
    rows = {row.tobytes(): int(lab) for row, lab in zip(x.flatten(1).numpy(), label, strict=True)}
    assert all(
        rows[row.tobytes()] == lab for row, lab in zip(px.flatten(1).numpy(), plabel, strict=True)
    )
    assert part.split("test")[0].shape == (6, 1, 28, 28)  # the test split stays whole


def test_mnist_reads_plain_files_directly_in_root(tmp_path):
    write_mnist(tmp_path, n_train=12, gz=False)
    dm = MNISTDataModule(root=str(tmp_path), download=False, batch_size=4)
    assert dm.split("train")[0].shape == (12, 1, 28, 28)


def test_mismatched_image_and_label_files_are_a_data_error(tmp_path):
    write_mnist(tmp_path, n_train=12, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11), gz=False)
    with pytest.raises(DataError, match="11 labels"):
        MNISTDataModule(root=str(tmp_path), download=False, batch_size=4).split("train")


@pytest.mark.skipif(
    not FASHION.is_dir(), reason=f"{FASHION} absent (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_from_the_debian_package():
    dm = FashionMNISTDataModule(root=str(FASHION), download=False, batch_size=64)
    dm.setup("fit")
    x, label = dm.split("train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert label.bincount().tolist() == [6000] * 10
    x_test, label_test = dm.split("test")
    assert x_test.shape == (10000, 1, 28, 28) and label_test.bincount().tolist() == [1000] * 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (64, 1, 28, 28)


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        (MNISTDataModule, "MNIST/raw"),
        (FashionMNISTDataModule, "apt-get install dataset-fashion-mnist"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
    ],
)
def test_missing_dataset_without_download_is_one_data_error(tmp_path, module, extra):
    dm = module(root=str(tmp_path / "nowhere"), download=False, batch_size=4)
    with pytest.raises(DataError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert f"data.root={tmp_path / 'nowhere'}" in message
    assert "data.download=false" in message and "data.download=true" in message  # the fix
    assert extra in message
    assert not (tmp_path / "nowhere").exists()  # nothing was created


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    _resolves("ossci-datasets.s3.amazonaws.com") or _resolves("yann.lecun.com"),
    reason="the MNIST mirrors resolve: a real download could succeed or take minutes",
)
def test_mnist_download_without_internet_is_the_same_clean_error(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path), download=True, batch_size=4)
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        dm.setup("fit")
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert f"data.root={tmp_path}" in message
    assert "data.download=true but the download failed" in message


def test_download_failure_is_wrapped_in_one_data_error(tmp_path, monkeypatch):
    def offline(self, split):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno route to host")

    monkeypatch.setattr(MNISTDataModule, "_fetch", offline)
    dm = MNISTDataModule(root=str(tmp_path), download=True, batch_size=4)
    with pytest.raises(DataError, match=r"download failed \(RuntimeError: .* no route to host\)"):
        dm.setup()


def test_a_successful_download_is_then_read(tmp_path, monkeypatch):
    def fake_download(self, split):  # what torchvision does: files into root/MNIST/raw
        write_mnist(Path(self.root) / "MNIST" / "raw", n_train=10, gz=False)

    monkeypatch.setattr(MNISTDataModule, "_fetch", fake_download)
    dm = MNISTDataModule(root=str(tmp_path), download=True, batch_size=4)
    assert dm.split("train")[0].shape == (10, 1, 28, 28)


def test_prepare_data_downloads_without_reading(tmp_path, monkeypatch):
    calls = []

    def fake_download(self, split):
        calls.append(split)
        write_mnist(Path(self.root) / "MNIST" / "raw", n_train=10, gz=False)

    monkeypatch.setattr(MNISTDataModule, "_fetch", fake_download)
    dm = MNISTDataModule(root=str(tmp_path), download=True, batch_size=4)
    dm.prepare_data()
    assert calls == ["train"] and dm._splits == {}  # fetched, nothing loaded yet
    dm.prepare_data()
    dm.setup("fit")
    assert calls == ["train"]  # found on disk from then on


def test_a_download_that_brings_the_wrong_files_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(MNISTDataModule, "_fetch", lambda self, split: None)
    with pytest.raises(DataError, match="fetched files, but not these"):
        MNISTDataModule(root=str(tmp_path), download=True, batch_size=4).setup()


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar10_reads_the_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder, per_batch=3)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=4)
    assert (dm.channels, dm.image_size, dm.n_classes) == (3, 32, 10)
    x, label = dm.split("train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and label.dtype == torch.int64
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major.
    row = first[b"data"][0]
    assert x[0, 0, 0, 1] == row[1] and x[0, 1, 0, 0] == row[1024] and x[0, 2, 31, 31] == row[3071]
    assert label[:3].tolist() == first[b"labels"]
    assert dm.split("test")[0].shape == (3, 3, 32, 32)
    # The batches folder itself also works as data.root.
    direct = CIFAR10DataModule(root=str(folder), download=False, batch_size=4, n_samples=5)
    assert direct.split("train")[0].shape == (5, 3, 32, 32)


def test_corrupt_cifar_batch_is_a_data_error_naming_it(tmp_path):
    write_cifar_batches(tmp_path, per_batch=2)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=2)
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 pickle batch"):
        dm.setup()


class _Marker:
    """Unpickling this runs `open(path, "w")`: a stand-in for an attacker's code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_are_read(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder, per_batch=2)
    for path in folder.iterdir():
        batch = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=2)
    assert dm.split("train")[0].shape == (10, 3, 32, 32)


@pytest.mark.parametrize(
    "payload",
    ["object", "in-labels", "function", "object-array"],
)
def test_cifar_reader_never_runs_code_from_a_batch(tmp_path, payload):
    marker = tmp_path / "marker"
    write_cifar_batches(tmp_path, per_batch=2)
    batch = pickle.loads((tmp_path / "data_batch_1").read_bytes())
    if payload == "object":
        evil = _Marker(marker)
    elif payload == "in-labels":
        evil = {**batch, b"labels": [_Marker(marker), 1]}
    elif payload == "function":
        evil = {**batch, b"data": os.getcwd}
    else:
        evil = {**batch, b"data": np.array([_Marker(marker)] * 3072, dtype=object)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(evil))
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=2)
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 pickle batch"):
        dm.setup()
    assert not marker.exists()


# --- image folders --------------------------------------------------------------------------


def test_image_folder_with_labels(image_tree):
    dm = ImageFolderDataModule(root=str(image_tree), image_size=16, labels=True, batch_size=2)
    assert dm.n_classes == 2  # from folder names, before any image is decoded
    x, label = dm.split("train")
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert label.tolist() == [0, 0, 1]  # cats/a, cats/deeper/b, dogs/c; classes sorted
    # Shorter side resized to 16, centre crop of the 32-wide result: left half red, right blue.
    assert (x[:, 0, :, :7] == 255).all() and (x[:, 2, :, :7] == 0).all()
    assert (x[:, 2, :, 9:] == 255).all() and (x[:, 0, :, 9:] == 0).all()
    with pytest.raises(ConfigError, match="data=image_folder has no test split"):
        dm.split("test")


def test_image_folder_grey_and_unlabelled(image_tree):
    dm = ImageFolderDataModule(root=str(image_tree), image_size=8, channels=1, batch_size=2)
    x, label = dm.split("train")
    assert x.shape == (3, 1, 8, 8) and label is None and dm.n_classes is None


def test_image_folder_declared_n_classes_is_checked(image_tree):
    dm = ImageFolderDataModule(root=str(image_tree), labels=True, n_classes=3, batch_size=2)
    assert dm.n_classes == 3
    with pytest.raises(ConfigError, match=r"data\.n_classes=3 but .* has 2 class folders"):
        dm.setup()


@pytest.mark.parametrize("case", ["missing", "empty", "no_images"])
def test_image_folder_without_images_is_a_data_error(tmp_path, case):
    root = tmp_path / "imgs"
    if case != "missing":
        root.mkdir()
    if case == "no_images":
        (root / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(root), batch_size=2)
    with pytest.raises(DataError, match=f"data.root={root}"):
        dm.setup()


def test_image_folder_labels_need_class_folders(image_tree):
    write_png(image_tree / "loose.png", np.zeros((8, 8, 3), np.uint8))
    dm = ImageFolderDataModule(root=str(image_tree), labels=True, batch_size=2)
    with pytest.raises(DataError, match=r"loose\.png"):
        dm.setup()


def test_image_folder_undecodable_file_is_a_data_error(image_tree):
    (image_tree / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    dm = ImageFolderDataModule(root=str(image_tree), batch_size=2)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        dm.setup()


# --- every config instantiates --------------------------------------------------------------


def dataset_classes(cls: type = InMemoryDataModule) -> set[type]:
    """Every dataset ganforge.data defines: the subclasses of the base that name themselves (the
    ones without a `name`, e.g. IDXDataModule, only share code)."""
    found = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("ganforge.data."):
            found |= dataset_classes(sub) | ({sub} if "name" in vars(sub) else set())
    return found


def test_every_dataset_has_a_config():
    targets = {OmegaConf.load(CONF_DATA / f"{n}.yaml")["_target_"] for n in data_options()}
    classes = {f"{c.__module__}.{c.__qualname__}" for c in dataset_classes()}
    assert classes <= targets, f"datasets without a conf/data yaml: {sorted(classes - targets)}"


@pytest.mark.parametrize("name", data_options())
def test_config_instantiates(tmp_path, name):
    data = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "data": data})
    if "n_samples" in data:
        cfg.data.n_samples = 64
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, InMemoryDataModule)
    assert dm.name == cfg.data.name == name
    # The primitive keys other configs interpolate agree with the module.
    assert (dm.channels, dm.image_size, dm.n_classes) == (
        cfg.data.channels,
        cfg.data.image_size,
        cfg.data.n_classes,
    )
    assert dm.is_image == (cfg.data.channels is not None)
    assert dm.batch_size == cfg.data.batch_size
    if "root" in data:
        assert dm.root.startswith(str(tmp_path))
    if not dm.is_image:
        assert cfg.data.dim == 2
        dm.setup("fit")
        assert dm.split("train")[0].shape == (64, 2)
