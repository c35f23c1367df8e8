"""The process's global random streams, captured and restored for an exact resume.

DiffAugment, dropout and flips draw from torch's global generator (and the GPU's), and user code
may draw from numpy's or python's: a resumed run continues them where the checkpoint left them. The
states are tensors and primitives only, so the checkpoint still loads with `weights_only=True`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def get_rng_states() -> dict[str, Any]:
    """torch (CPU and, when there is CUDA, every visible GPU), numpy and python RNG states as
    tensors and primitives (weights_only-safe)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        # Dropout, DiffAugment and flips on a GPU draw from its own generator.
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = states.get("cuda")  # absent when saved without CUDA (or before CUDA states were saved)
    if cuda and torch.cuda.is_available():
        # As many devices as both machines have; a resume on fewer GPUs restores those it has.
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
