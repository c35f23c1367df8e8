"""The FID feature extractor: uint8 images → 2048-d Inception pool features (and IS logits).

The network is torch-fidelity's (``backbone``), its weights file found by ``weights`` and read by
``backbone.load_inception``. ``InceptionFeatures`` is a plain class, not an ``nn.Module``: it holds
frozen weights that must never enter a training checkpoint, be switched to train mode by a parent's
``.train()``, or be cast by a parent's ``.half()``; as a plain attribute of a LightningModule or
callback it is invisible to all three. Build it lazily (in an evaluation callback or command),
never in ``GANSystem.__init__``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.backbone import LAYERS, load_inception
from ganforge.metrics.files import file_sha256
from ganforge.metrics.inception_fast import fuse_inception, resize_tf1_bilinear
from ganforge.metrics.weights import resolve_weights

__all__ = ["NUM_FEATURES", "RESIZE_MODES", "FeatureExtractor", "InceptionFeatures"]

NUM_FEATURES = 2048
RESIZE_MODES = ("tf1_bilinear", "bilinear", "bicubic")


class FeatureExtractor(Protocol):
    """What the reference cache and ``evaluate`` need from an extractor (tests use small fakes)."""

    num_features: int
    has_logits: bool
    device: torch.device

    def protocol_fields(self) -> dict[str, Any]: ...

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def to(self, device: torch.device | str) -> FeatureExtractor: ...


class InceptionFeatures:
    """uint8 images (N, C, H, W), C in {1, 3}, any H×W → float32 (N, 2048) Inception pool features.

    The default resize is torch-fidelity's own (``tf1_bilinear``: TensorFlow-1.x-exact bilinear to
    299×299, no antialiasing), which is what ``FeatureExtractorInceptionV3.forward`` does and what
    published FIDs use. ``resize="bilinear"|"bicubic"`` uses ``F.interpolate`` instead, with
    ``antialias=True`` giving PIL-like downsampling (torchmetrics' ``antialias=True`` is
    ``bilinear`` + antialias). Grayscale is repeated to 3 channels.

    Always frozen, in eval mode and float32, gradient-free, batched internally by ``batch_size``.
    ``channels_last=False`` reproduces torch-fidelity's forward bit for bit. The default fast path
    (channels-last layout, BatchNorm folded into the conv weights, conv+ReLU fused with pre-packed
    oneDNN weights on CPU, a cheaper but value-identical TF1 resize: ``inception_fast``) runs
    ~1.8x torch-fidelity's images/s on a CPU and differs from it by float rounding only (~1e-6
    relative). The weights are identified by ``weights_sha256`` (in every reference-cache key).
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
        self.net, self.has_logits = load_inception(self.weights_path)
        # The fused copy for the fast path, built on first use on the network's current device.
        self._fused: nn.Module | None = None
        self._prepare_net()

    @property
    def device(self) -> torch.device:
        return self.net.fc.weight.device

    def _prepare_net(self) -> None:
        # float32 always, as torch-fidelity's; channels_last is ~1.6x faster on CPU, and moves
        # features by ~1e-6 relative (summation order).
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net.to(dtype=torch.float32, memory_format=fmt)

    def to(self, device: torch.device | str) -> InceptionFeatures:
        """Move the network to `device` (the fused copy is rebuilt there on first use)."""
        device = torch.device(device)
        if device != self.device:
            self.net.to(device)
            self._prepare_net()
            self._fused = None
        return self

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
        net: nn.Module = self.net
        x = self._to_299(x.to(self.device, torch.float32))
        x = (x - 128) / 128
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            if self._fused is None:
                self._fused = fuse_inception(self.net)
            net = self._fused
        for name in LAYERS:
            x = getattr(net, name)(x)
        pool = torch.flatten(x, 1)
        # Inception Score's logits have no bias (as in the original TF code; torch-fidelity's
        # "logits_unbiased", its default for IS).
        logits = pool.mm(self.net.fc.weight.T) if self.has_logits else None
        return pool, logits

    @staticmethod
    def _check(images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            dtype = getattr(images, "dtype", type(images))
            raise GanforgeError(
                f"Inception features need uint8 images, got {dtype}; convert float images in "
                f"[-1, 1] with ganforge.data.base.to_uint8(x)"
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
        # clone() outside inference mode gives ordinary tensors that later maths may add into.
        pool = torch.cat(pools).to(images.device).clone()
        if not self.has_logits:
            return pool, None
        return pool, torch.cat(logits).to(images.device).clone()  # type: ignore[arg-type]

    def __call__(self, images: Tensor) -> Tensor:
        """The pool features alone."""
        return self.extract(images)[0]
