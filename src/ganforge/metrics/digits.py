"""The digit classifier behind the Stacked-MNIST mode metric: a small CNN that ganforge trains
itself, on the digit source's "train" digits, and scores on its held-out "test" digits.

Why ganforge's own: the papers each used a classifier of their own (VEEGAN and PacGAN a
TensorFlow MNIST tutorial net) that ships with no weights; a classifier trained here from a
fixed recipe on named data is one anyone can rebuild and check. Training is deterministic (seeded,
on the CPU, one thread) and cached under ganforge's cache by the digits' identity plus the
recipe's version, so it runs once per machine. The cache holds plain tensors and numbers, read
with `weights_only=True`; a file that is unreadable, written for other digits or another
recipe, or fails its checksum is logged and retrained, never trusted.

A classifier whose held-out accuracy is under `ACCURACY_FLOOR` refuses to score: its mistakes
would read as modes (a misread digit is a different triple).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import GanforgeError
from ganforge.metrics.files import atomic_write_bytes, torch_save_bytes

log = logging.getLogger("ganforge")

# Held-out accuracy below which the classifier refuses to score. Each misread channel moves a
# sample to another triple, so at 95 % about 14 % of perfect samples land on a wrong mode.
ACCURACY_FLOOR = 0.95
# The training recipe; any change to it (or to DigitClassifier) must bump `version`, which is part
# of the cache key, so an old cache file is never read as the new classifier.
RECIPE: dict[str, Any] = {
    "version": 1,
    "epochs": 20,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "max_shift": 2,  # random translation by up to this many pixels: the light augmentation
    "seed": 0,
}


class DigitSource(Protocol):
    """What the classifier needs of a dataset: labelled digits, split, and what identifies them."""

    digit_source: str

    def digits(self, split: str) -> tuple[Tensor, Tensor]: ...  # uint8 (N,1,28,28), int64 (N,)

    def digit_identity(self) -> dict[str, Any]: ...


class DigitClassifier(nn.Module):
    """28x28 grey digit in [0, 1] -> 10 logits. Two strided conv layers and a small head: about
    98 % on MNIST-sized held-out digits, and cheap enough to read 78,000 channels (26,000 samples)
    in seconds on one core; strides instead of max-pooling, which took half of the CPU time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, stride=2, padding=2)  # 28 -> 14
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)  # 14 -> 7
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass(frozen=True)
class TrainedClassifier:
    model: DigitClassifier
    accuracy: float  # on the source's held-out "test" digits
    source: str  # the source's own description (name and size)
    path: Path | None  # the cache file

    @torch.no_grad()
    def probabilities(self, digits: Tensor, batch_size: int = 4096) -> Tensor:
        """Class probabilities (N, 10) of grey digits in [0, 1], shape (N, 1, 28, 28)."""
        self.model.eval()
        out = [self.model(b.float()).softmax(1) for b in digits.split(batch_size)]
        return torch.cat(out) if out else torch.empty(0, 10)

    def check(self, floor: float = ACCURACY_FLOOR) -> None:
        if self.accuracy < floor:
            raise GanforgeError(
                f"the digit classifier reads {self.accuracy:.1%} of its held-out digits "
                f"({self.source}) correctly, under the {floor:.0%} the mode metric needs: its "
                "mistakes would count as modes. Train it on more digits (data.source=torchvision "
                "with MNIST under data.root) or delete its cache file to retrain"
                + (f" ({self.path})" if self.path else "")
            )


def _grey(x: Tensor) -> Tensor:
    return x.float() / 255.0


def _shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Each image translated by a random whole number of pixels (zero fill), as in the classic
    MNIST augmentation: the generator's digits are not always centred as MNIST's are."""
    n, pad = x.shape[0], max_shift
    padded = F.pad(x, (pad, pad, pad, pad))
    dx, dy = (torch.randint(0, 2 * pad + 1, (n,), generator=g) for _ in range(2))
    rows = (dy[:, None] + torch.arange(28)[None]).view(n, 1, 28, 1).expand(n, 1, 28, 28 + 2 * pad)
    taken = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(28)[None]).view(n, 1, 1, 28).expand(n, 1, 28, 28)
    return taken.gather(3, cols)


def train_classifier(x: Tensor, y: Tensor, recipe: dict[str, Any] = RECIPE) -> DigitClassifier:
    """A DigitClassifier trained on uint8 digits `x` (N,1,28,28) with labels `y`: the same
    weights on every machine with this torch (seeded, CPU, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a reduction's order, hence the weights, depends on the threads
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
            torch.manual_seed(recipe["seed"])
            model = DigitClassifier()
            g = torch.Generator().manual_seed(recipe["seed"])
            opt = torch.optim.AdamW(
                model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
            )
            steps = recipe["epochs"] * -(-len(x) // recipe["batch_size"])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe["lr"], total_steps=steps)
            grey = _grey(x)
            model.train()
            for _ in range(recipe["epochs"]):
                for idx in torch.randperm(len(x), generator=g).split(recipe["batch_size"]):
                    batch = _shift(grey[idx], recipe["max_shift"], g)
                    loss = F.cross_entropy(model(batch), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    return float((model(_grey(x)).argmax(1) == y).double().mean())


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ganforge" / "digits"


def _key(source: DigitSource, recipe: dict[str, Any]) -> str:
    key = {"digits": source.digit_identity(), "recipe": recipe}
    try:
        return json.dumps(key, sort_keys=True)
    except TypeError as e:
        raise GanforgeError(f"digit_identity() must hold plain values: {e}") from e


def _checksum(state: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_path(key_json: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
    return folder / f"digit-classifier-v{RECIPE['version']}-{digest}.pt"


def _load(path: Path, key_json: str) -> tuple[DigitClassifier, float]:
    """The cached classifier and its accuracy, or ValueError saying why it cannot be trusted."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, a pickle of objects: all "retrain"
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("key_json") != key_json:
        raise ValueError("written for other digits or another recipe")
    state, acc = blob.get("state"), blob.get("accuracy")
    if not isinstance(state, dict) or not all(isinstance(t, Tensor) for t in state.values()):
        raise ValueError("weights missing")
    if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy {acc!r} is not a fraction")
    if blob.get("checksum") != _checksum(state):
        raise ValueError("content checksum mismatch")
    model = DigitClassifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"weights do not fit the classifier ({e})") from e
    return model.eval(), acc


def load_or_train(
    source: DigitSource, cache_dir: str | os.PathLike[str] | None = None
) -> TrainedClassifier:
    """The source's classifier from the cache (reading no digit), or trained, measured on the
    held-out digits and cached. Its accuracy is logged either way; `check()` enforces the floor."""
    key_json = _key(source, RECIPE)
    path = cache_path(key_json, cache_dir)
    model: DigitClassifier | None = None
    if path.is_file():
        try:
            model, acc = _load(path, key_json)
        except ValueError as e:
            log.warning("digit classifier cache %s is unusable (%s); retraining it", path, e)
    if model is None:
        x, y = source.digits("train")
        log.info("training the digit classifier on %d digits (%s)", len(x), source.digit_source)
        model = train_classifier(x, y)
        acc = accuracy(model, *source.digits("test"))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        blob = {"key_json": key_json, "state": state, "accuracy": acc}
        blob["checksum"] = _checksum(state)
        atomic_write_bytes(path, torch_save_bytes(blob))
    log.info("digit classifier: %.2f%% held-out accuracy (%s)", 100 * acc, source.digit_source)
    return TrainedClassifier(model, acc, source.digit_source, path)
