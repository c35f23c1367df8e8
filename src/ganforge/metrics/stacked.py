"""Mode coverage on Stacked MNIST (the VEEGAN / Unrolled GAN / PacGAN protocol).

Each generated image's three channels are read separately by ganforge's digit classifier
(`digits.py`); the three digits name one of 1,000 modes. Over N samples:

* `modes`: the number of distinct triples seen (VEEGAN's and PacGAN's "modes captured": one
  sample is enough);
* `reverse_kl`: KL(p_gen || uniform) = sum over seen triples of p log(p * 1000), in nats: 0 when
  every triple is equally frequent, log 1000 = 6.91 when one triple is all G makes;
* `digit_confidence`: the classifier's mean top probability per channel, a quality signal (blurry
  or non-digit channels read with low confidence, yet still count as some triple).

N: 26,000 in VEEGAN's and PacGAN's Table 2 protocol, 25,600 in the Unrolled GAN setting (PacGAN
Table 3). With N < 1,000 not even a perfect generator can show all modes: such a score is
flagged as not comparable (`comparable: false` in the protocol).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ganforge.metrics.digits import TrainedClassifier

N_MODES = 1000
DEFAULT_N = 26_000  # VEEGAN and PacGAN Table 2
UNROLLED_N = 25_600  # Unrolled GAN, PacGAN Table 3
MIN_COMPARABLE = N_MODES  # below this, even a perfect G cannot show every mode


@runtime_checkable
class DigitData(Protocol):
    """What the mode metric needs of a dataset: a labelled digit source and how to read a
    generated image as three 28-px digits (in [-1, 1])."""

    digit_source: str
    resize: str  # how an image holds the 28-px digits: "none", or "zero-pad 2 px" for 32 px

    def digits(self, split: str) -> tuple[Tensor, Tensor]: ...

    def digit_identity(self) -> dict[str, Any]: ...

    def to_digit_channels(self, x: Tensor) -> Tensor: ...


class TripleCounts:
    """Running counts over batches: the 1,000-bin histogram of triples and the confidence sum,
    so 26,000 images never need to be held at once."""

    def __init__(self) -> None:
        self.counts = torch.zeros(N_MODES, dtype=torch.long)
        self.confidence_sum = 0.0
        self.n = 0

    def add(self, probs: Tensor) -> None:
        """`probs`: (N, 3, 10) class probabilities of each sample's R, G, B channel."""
        assert probs.ndim == 3 and probs.shape[1:] == (3, 10), probs.shape
        top, digit = probs.max(dim=2)
        triple = digit[:, 0] * 100 + digit[:, 1] * 10 + digit[:, 2]  # as the data's labels
        self.counts += torch.bincount(triple, minlength=N_MODES)
        self.confidence_sum += float(top.double().sum())
        self.n += probs.shape[0]

    def stats(self) -> dict[str, float]:
        assert self.n > 0, "no samples counted"
        p = self.counts.double() / self.n
        seen = p > 0
        return {
            "modes": float(seen.sum()),
            "reverse_kl": float((p[seen] * (p[seen] * N_MODES).log()).sum()),
            "digit_confidence": self.confidence_sum / (3 * self.n),
        }


def channel_probabilities(images: Tensor, data: DigitData, classifier: TrainedClassifier) -> Tensor:
    """(N, 3, 10) digit probabilities of generated images in [-1, 1] (N, 3, S, S)."""
    channels = data.to_digit_channels(images.detach().float().cpu())  # (N, 3, 28, 28), [-1, 1]
    n = channels.shape[0]
    grey = ((channels + 1) / 2).clamp(0, 1).reshape(n * 3, 1, 28, 28)  # as uint8 / 255
    return classifier.probabilities(grey).reshape(n, 3, 10)


def mode_stats(
    batches: Iterable[Tensor], data: DigitData, classifier: TrainedClassifier
) -> dict[str, float]:
    """`modes`, `reverse_kl`, `digit_confidence` of generated images given in batches."""
    counts = TripleCounts()
    for images in batches:
        counts.add(channel_probabilities(images, data, classifier))
    return counts.stats()
