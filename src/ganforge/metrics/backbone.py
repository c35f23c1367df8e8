"""torch-fidelity's FID Inception network (``FeatureExtractorInceptionV3``, a faithful port of the
TensorFlow Inception graph of 2015-12-05 on which published FID, KID, IS and P&R numbers are
defined), built without its own weight loading and loaded from a weights file by us.

A file built by ``ganforge-fetch-inception`` has no final fc layer (its source network has none),
so such weights give pool features (FID, KID, P&R) but no logits: Inception Score needs the
original torch-fidelity file. ``load_inception`` says which one it loaded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ganforge.errors import GanforgeError
from ganforge.metrics.files import torch_save_bytes
from ganforge.metrics.weights import FETCH_COMMAND

FC_KEYS = ("fc.weight", "fc.bias")
# FeatureExtractorInceptionV3.forward's layer sequence from the scaled 299×299 input to pool3.
LAYERS = (
    *("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1"),
    *("Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2"),
    *("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d"),
    *("Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"),
)


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
