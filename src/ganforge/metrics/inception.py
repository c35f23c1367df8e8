"""The FID Inception network: finding its weights offline, and a uint8 → 2048-d feature extractor.

The network is torch-fidelity's ``FeatureExtractorInceptionV3``: a faithful port of the
TensorFlow Inception graph of 2015-12-05 on which published FID, KID, IS and P&R numbers are
defined. Weights are looked up, in order:

1. a configured file (``metrics.inception_weights=...``);
2. torch-fidelity's cache file (``default_weights_path()``:
   ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``);
3. torch-fidelity's own download URL (short timeout, so an offline machine fails in seconds);
4. otherwise a ``ConfigError`` saying how to build the file offline: ``ganforge-fetch-inception``.

A file built by ``ganforge-fetch-inception`` has no final fc layer (its source network has none), so
such weights give pool features (FID, KID, P&R) but no logits: Inception Score needs the original
torch-fidelity file. ``InceptionFeatures.has_logits`` says which one was loaded.

Nothing here belongs in a LightningModule checkpoint: callers build the extractor lazily, and it
keeps its network outside ``nn.Module`` registration, so its ``state_dict()`` is empty (see
``InceptionFeatures``).
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.inception_fast import fuse_inception, resize_tf1_bilinear

WEIGHTS_FILENAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
FETCH_COMMAND = "ganforge-fetch-inception  (or: python -m ganforge.metrics.fetch_inception)"
NUM_FEATURES = 2048
FC_KEYS = ("fc.weight", "fc.bias")
RESIZE_MODES = ("tf1_bilinear", "bilinear", "bicubic")
# How float images become the uint8 the protocol is defined on (see quantize_uint8).
# FeatureExtractorInceptionV3.forward's layer sequence from the scaled 299×299 input to pool3.
_LAYERS = (
    *("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1"),
    *("Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2"),
    *("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d"),
    *("Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"),
)
QUANTIZATION = "uint8 = clamp(round((x - lo) / (hi - lo) * 255), 0, 255)"


def default_weights_path() -> Path:
    """torch-fidelity's (and torchmetrics') cache file for the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would hide a shared cache file from other users; "xb" obeys umask.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def torch_save_bytes(obj: object) -> bytes:
    """torch.save into memory: the archive is then named "archive", not after a random tmp file,
    so the same tensors always give the same bytes (and sha256)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def missing_weights_error(detail: str) -> ConfigError:
    return ConfigError(
        f"FID Inception weights not found ({detail}). Build them offline with\n"
        f"    {FETCH_COMMAND}\n"
        f"which writes {default_weights_path()}, or point to an existing torch-fidelity "
        f"weights file with metrics.inception_weights=/path/to/{WEIGHTS_FILENAME}"
    )


def _download(url: str, dest: Path, timeout_s: float) -> None:
    """torch.hub.download_url_to_file has no timeout: a firewalled machine would hang for minutes.
    Same checks as torch.hub (sha256 prefix from the file name), but every socket op times out."""
    expected_prefix = dest.stem.rsplit("-", 1)[-1]
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data = response.read()
    actual = hashlib.sha256(data).hexdigest()
    if not actual.startswith(expected_prefix):
        raise OSError(f"downloaded file has sha256 {actual}, expected prefix {expected_prefix}")
    atomic_write_bytes(dest, data)


def resolve_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    timeout_s: float = 10.0,
) -> Path:
    """Find the Inception weights file (see the module docstring for the order)."""
    if path is not None:
        configured = Path(path).expanduser()
        if not configured.is_file():
            raise ConfigError(
                f"metrics.inception_weights={path} does not exist. Fix the path, or drop the "
                f"key to use {default_weights_path()} (build it offline with {FETCH_COMMAND})"
            )
        return configured
    cached = default_weights_path()
    if cached.is_file():
        return cached
    if not allow_download:
        raise missing_weights_error(f"no file at {cached}; download disabled")
    try:
        _download(URL_INCEPTION_V3, cached, timeout_s)
    except (OSError, ValueError) as e:  # URLError, socket timeouts and DNS failures are OSErrors
        raise missing_weights_error(f"no file at {cached}; download failed: {e}") from e
    return cached


class _TorchFidelityInception(FeatureExtractorInceptionV3):
    """torch-fidelity's network, built without weights: its constructor insists on loading some
    (strictly, or downloading), so we hand it an empty state dict and skip that one load;
    ``load_inception`` then loads the real file itself, strict for everything but fc."""

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        if not state_dict:  # only the constructor's load of _empty_state_dict_file()
            return nn.modules.module._IncompatibleKeys([], [])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _empty_state_dict_file() -> io.BytesIO:
    # Handed to torch-fidelity's constructor so that it neither downloads nor reads a file.
    return io.BytesIO(torch_save_bytes({}))


def build_backbone(features_list: list[str]) -> FeatureExtractorInceptionV3:
    """torch-fidelity's network with random weights (its architecture, for loading or mapping)."""
    return _TorchFidelityInception(
        "inception-v3-compat",
        features_list,
        feature_extractor_weights_path=_empty_state_dict_file(),
    )


def load_inception(
    path: str | os.PathLike[str], features_list: list[str] | None = None
) -> tuple[FeatureExtractorInceptionV3, bool]:
    """Load a torch-fidelity-layout weights file; return (network, has_logits).

    Every key must be present with the right shape, except the fc layer, which the files built by
    ``ganforge-fetch-inception`` lack; then has_logits is False and fc is filled with NaN so that
    any accidental use of logits is loudly wrong rather than quietly plausible.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise GanforgeError(
            f"Inception weights file {path} is unreadable ({type(e).__name__}: {e}). Delete it and "
            f"rebuild it with {FETCH_COMMAND}"
        ) from e
    if not isinstance(state, Mapping):
        raise GanforgeError(
            f"Inception weights file {path} holds a {type(state)}, not a state dict"
        )
    present = [k for k in FC_KEYS if k in state]
    if len(present) == 1:
        raise GanforgeError(
            f"Inception weights file {path} has {present[0]} but not the rest of fc"
        )
    has_logits = len(present) == 2
    features = features_list or (["2048", "logits_unbiased"] if has_logits else ["2048"])
    net = build_backbone(features)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        raise GanforgeError(f"Inception weights file {path} does not fit the network: {e}") from e
    missing = [k for k in result.missing_keys if has_logits or k not in FC_KEYS]
    if missing or result.unexpected_keys:
        raise GanforgeError(
            f"Inception weights file {path} is not a torch-fidelity InceptionV3 state dict: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}. Rebuild it with "
            f"{FETCH_COMMAND}"
        )
    if not has_logits:
        with torch.no_grad():
            net.fc.weight.fill_(float("nan"))
            net.fc.bias.fill_(float("nan"))
    net.requires_grad_(False).eval()
    return net, has_logits


class FeatureExtractor(Protocol):
    """What the reference cache and ``evaluate`` need from an extractor (tests use small fakes)."""

    num_features: int
    has_logits: bool

    def protocol_fields(self) -> dict[str, Any]: ...

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...


def quantize_uint8(images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Float images in ``value_range`` → uint8 with rounding (truncation would bias every pixel
    down by half a level, which FID notices). This is the ``QUANTIZATION`` in the protocol."""
    lo, hi = value_range
    scaled = (images.detach().float() - lo) * (255.0 / (hi - lo))
    return scaled.round().clamp(0, 255).to(torch.uint8)


class InceptionFeatures(nn.Module):
    """uint8 images (N, C, H, W), C in {1, 3}, any H×W → float32 (N, 2048) Inception pool features.

    The default resize is torch-fidelity's own (``tf1_bilinear``: TensorFlow-1.x-exact bilinear to
    299×299, no antialiasing), which is what ``FeatureExtractorInceptionV3.forward`` does and what
    published FIDs use. ``resize="bilinear"|"bicubic"`` uses ``F.interpolate`` instead, with
    ``antialias=True`` giving PIL-like downsampling (torchmetrics' ``antialias=True`` is
    ``bilinear`` + antialias). Grayscale is repeated to 3 channels.

    Usable as ``feature=`` of torchmetrics' ``FrechetInceptionDistance`` and
    ``KernelInceptionDistance`` (with their default ``normalize=False``: they then pass the uint8
    images through unchanged and read ``num_features``). Always in eval mode, gradient-free,
    batched internally by ``batch_size``. ``channels_last=False`` reproduces torch-fidelity's
    forward bit for bit. The default fast path (channels-last layout, BatchNorm folded into the
    conv weights, conv+ReLU fused with pre-packed oneDNN weights on CPU, a cheaper but
    value-identical TF1 resize: ``inception_fast``) runs ~1.8x torch-fidelity's images/s on a
    CPU and differs from it by float rounding only (~1e-6 relative).

    The torch-fidelity network is deliberately *not* a registered submodule: ``state_dict()`` and
    ``parameters()`` are empty, so even a metric holding this extractor that ends up attached to a
    LightningModule cannot put 95 MB of frozen weights into a checkpoint. ``.to()``/``.cuda()``
    still move it (``_apply``). The weights are identified by ``weights_sha256`` instead. Build it
    lazily (in an eval callback or script), never in ``GANSystem.__init__``.
    """

    num_features: int = NUM_FEATURES

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None = None,
        *,
        resize: str = "tf1_bilinear",
        antialias: bool = False,
        batch_size: int = 50,
        allow_download: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ConfigError(f"metrics.resize={resize} is not one of {RESIZE_MODES}")
        if resize == "tf1_bilinear" and antialias:
            raise ConfigError(
                "metrics.antialias=true needs metrics.resize=bilinear or bicubic: torch-fidelity's "
                "tf1_bilinear resize (the FID standard) has no antialiasing"
            )
        if batch_size < 1:
            raise ConfigError(f"metrics.batch_size={batch_size} must be >= 1")
        self.resize = resize
        self.antialias = antialias
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.weights_path = resolve_weights(weights_path, allow_download=allow_download)
        self.weights_sha256 = file_sha256(self.weights_path)
        net, self.has_logits = load_inception(self.weights_path)
        # object.__setattr__ bypasses nn.Module registration on purpose: see the class docstring.
        object.__setattr__(self, "_net", net)
        # The fused copy for the fast path, built on first use on the network's current device.
        object.__setattr__(self, "_fused", None)
        self._prepare_net()
        self.eval()

    @property
    def net(self) -> FeatureExtractorInceptionV3:
        return self._net

    @property
    def device(self) -> torch.device:
        return self._net.fc.weight.device

    def _prepare_net(self) -> None:
        # float32 always, as torch-fidelity's (a parent's .half() must not change the protocol).
        # channels_last is ~1.6x faster on CPU; features move by ~1e-6 relative (summation order).
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self._net.to(dtype=torch.float32, memory_format=fmt)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> InceptionFeatures:
        # Moves and casts reach the unregistered network too.
        self._net._apply(fn, *args, **kwargs)
        self._prepare_net()
        object.__setattr__(self, "_fused", None)  # rebuilt from the moved network when needed
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> InceptionFeatures:
        # Frozen BN statistics are the protocol; never let a parent's .train() switch them.
        return super().train(False)

    def protocol_fields(self) -> dict[str, Any]:
        """What decides the numbers these features give (goes into reference-cache keys)."""
        return {
            "backbone": "torch-fidelity InceptionV3 2015-12-05 pool3",
            "resize": self.resize,
            "antialias": self.antialias,
            "weights_sha256": self.weights_sha256,
        }

    def _to_299(self, x: Tensor) -> Tensor:
        size = (FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE,) * 2
        if self.resize == "tf1_bilinear":
            if self.channels_last:
                return resize_tf1_bilinear(x, size)
            return interpolate_bilinear_2d_like_tensorflow1x(x, size=size, align_corners=False)
        x = F.interpolate(
            x, size=size, mode=self.resize, align_corners=False, antialias=self.antialias
        )
        return x.clamp(0, 255)  # bicubic overshoots; keep the range the network was fed in TF

    def _forward_batch(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        # Mirrors FeatureExtractorInceptionV3.forward step for step (test_inception checks they
        # agree), with the resize made selectable.
        net = self._net
        x = self._to_299(x.to(self.device, torch.float32))
        x = (x - 128) / 128
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            if self._fused is None:
                object.__setattr__(self, "_fused", fuse_inception(net))
            net = self._fused
        for name in _LAYERS:
            x = getattr(net, name)(x)
        pool = torch.flatten(x, 1)
        # Inception Score's logits have no bias (as in the original TF code; torch-fidelity's
        # "logits_unbiased", its default for IS).
        logits = pool.mm(self._net.fc.weight.T) if self.has_logits else None
        return pool, logits

    def _check(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            dtype = getattr(images, "dtype", type(images))
            raise GanforgeError(
                f"Inception features need uint8 images, got {dtype}; convert float images with "
                f"ganforge.metrics.inception.quantize_uint8(x, value_range=(-1, 1))"
            )
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GanforgeError(
                f"Inception features need (N, 1|3, H, W) images, got {tuple(images.shape)}"
            )
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features (N, 2048), logits (N, 1008) or None) as float32 on the images' device."""
        images = self._check(images)
        pools, logits = [], []
        with torch.inference_mode():
            for chunk in images.split(self.batch_size):
                pool, logit = self._forward_batch(chunk)
                pools.append(pool)
                logits.append(logit)
        # clone() outside inference mode gives ordinary tensors that metric states may add into.
        pool = torch.cat(pools).to(images.device).clone()
        if not self.has_logits:
            return pool, None
        return pool, torch.cat(logits).to(images.device).clone()  # type: ignore[arg-type]

    def forward(self, images: Tensor) -> Tensor:
        return self.extract(images)[0]
