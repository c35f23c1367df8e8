"""Pieces every model shares: the spectral-norm switch, PacGAN packing, class-conditional
BatchNorm for generators, the label-dependent head of conditional discriminators, maxout units
and the papers' weight initialisations.

What the GAN system asks of a generator and a discriminator is written in `protocols.py`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.errors import ConfigError, check_int, check_positive

CONDITIONAL = ("none", "projection", "acgan")
# Weight initialisations of the papers' released code: torch's own, N(0, scale^2) (PacGAN's
# blocks IsotropicGaussian) or U(-scale, scale) (pylearn2's irange, Goodfellow et al. 2014).
INITS = ("default", "normal", "uniform")


def records_init_args(init: Callable[..., None]) -> Callable[..., None]:
    """Wraps a network's `__init__` to keep the arguments it was called with, defaults filled in,
    as `self.init_args`: checkpoints store them (primitives, so they load with `weights_only=True`)
    and rebuild the network from them without the config that made it."""
    signature = inspect.signature(init)
    this = next(iter(signature.parameters))

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        self.init_args = {k: v for k, v in bound.arguments.items() if k != this}

    return wrapper


def check_conditional(conditional: str, n_classes: int | None) -> int | None:
    """The class count a model conditions on: None for `model.conditional=none`."""
    if conditional not in CONDITIONAL:
        raise ConfigError(f"model.conditional={conditional!r} must be one of {list(CONDITIONAL)}")
    if conditional == "none":
        return None
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(
            f"model.conditional={conditional} needs a labelled dataset, but data.n_classes="
            f"{n_classes}; pick a dataset with labels (e.g. data=mnist5k; for data=image_folder "
            "set data.labels=true and data.n_classes=<number of class folders>) or set "
            "model.conditional=none"
        )
    return n_classes


def check_pack(pack: int) -> int:
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"model.pack={pack!r} must be a positive integer (1 = no packing)")
    return pack


def require_labels(y: Tensor | None) -> Tensor:
    if y is None:
        raise ValueError("this model is class-conditional: call it with labels, model(x, y)")
    return y


def spectral_norm_(module: nn.Module) -> nn.Module:
    """Spectrally normalise every conv, linear and embedding weight in `module` (Miyato et al.
    2018). Call after weight init: the parametrization normalises whatever weight it wraps."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return module


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """(B, C, ...) -> (B/m, m*C, ...): m consecutive samples become one input (Lin et al. 2018),
    concatenated along the feature (flat inputs) or channel (images) axis."""
    if x.shape[0] % pack:
        raise ConfigError(
            f"a batch of {x.shape[0]} samples cannot be split into packs of model.pack={pack}; "
            f"use a data.batch_size divisible by {pack}"
        )
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


# --- generators -------------------------------------------------------------------------------
class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; used by
    Miyato & Koyama 2018): the label steers every normalised feature map of G."""

    takes_label = True

    def __init__(self, features: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(features, affine=False)
        self.gamma = nn.Embedding(n_classes, features)
        self.beta = nn.Embedding(n_classes, features)
        # Start as plain BatchNorm: every class gets the identity affine map.
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        gamma, beta = self.gamma(y)[:, :, None, None], self.beta(y)[:, :, None, None]
        return self.bn(x) * gamma + beta


def batch_norm(features: int, n_classes: int | None) -> nn.Module:
    """Plain BatchNorm for an unconditional G (so its state dict is unchanged), else cBN."""
    if n_classes is None:
        return nn.BatchNorm2d(features)
    return ConditionalBatchNorm2d(features, n_classes)


def call(layer: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Apply `layer`, handing it the labels if it is one that takes them."""
    return layer(x, y) if getattr(layer, "takes_label", False) else layer(x)


class LabelledSequential(nn.Sequential):
    """nn.Sequential that passes the labels to the layers that take them (same state-dict keys)."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        for layer in self:
            x = call(layer, x, y)
        return x


# --- discriminators ---------------------------------------------------------------------------
class ConditionalHead(nn.Module):
    """The label terms of a discriminator, on its features h (one row per pack).

    projection (Miyato & Koyama 2018): logit += <embed(y), h>; with packing, the embeddings of
        the pack's samples are summed, so the term stays linear in each sample's label.
    acgan (Odena et al. 2017): per-sample class logits from the same features, for an auxiliary
        cross-entropy; a packed D predicts the m labels of its pack at once.
    none: no parameters, contributes nothing.
    """

    def __init__(self, features: int, conditional: str, n_classes: int | None, pack: int) -> None:
        super().__init__()
        self.conditional, self.pack = conditional, pack
        self.n_classes = check_conditional(conditional, n_classes)
        if conditional == "projection":
            self.embed = nn.Embedding(n_classes, features)
            nn.init.xavier_uniform_(self.embed.weight)
        elif conditional == "acgan":
            self.classify = nn.Linear(features, pack * n_classes)

    def forward(self, h: Tensor, y: Tensor | None) -> tuple[Tensor | float, Tensor | None]:
        """(term added to the logits, class logits (B, n_classes) or None)."""
        if self.conditional == "projection":
            e = self.embed(require_labels(y)).view(h.shape[0], self.pack, -1).sum(1)
            return (e * h).sum(1), None
        if self.conditional == "acgan":
            return 0.0, self.classify(h).view(-1, self.n_classes)
        return 0.0, None


def one_hot(y: Tensor, n_classes: int, like: Tensor) -> Tensor:
    return F.one_hot(require_labels(y), n_classes).to(like.dtype)


# --- maxout and initialisation ----------------------------------------------------------------
class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): one affine map to `out_features * pieces` units,
    then the max over each group of `pieces` consecutive units. Grouping consecutive units is
    the layout of blocks' LinearMaxout and pylearn2's Maxout, the layers of the PacGAN and GAN
    papers' discriminators."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        check_int("model.discriminator.pieces", pieces)
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(*x.shape[:-1], self.out_features, self.pieces).amax(-1)


def check_init(key: str, init: str, scale: float) -> None:
    if init not in INITS:
        raise ConfigError(f"{key}={init!r} must be one of {list(INITS)}")
    if init != "default":
        check_positive(f"{key}_scale", scale)


def init_weights_(module: nn.Module, init: str, scale: float) -> nn.Module:
    """Re-initialise every linear and conv layer of `module`: weights N(0, scale^2) ("normal") or
    U(-scale, scale) ("uniform"), biases zero; "default" keeps torch's initialisation.
    Normalisation layers keep their identity affine map (scale 1, shift 0), as in both papers'
    code. Call before `spectral_norm_`, which normalises whatever weight it wraps."""
    if init == "default":
        return module
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, scale)
            else:
                nn.init.uniform_(m.weight, -scale, scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
