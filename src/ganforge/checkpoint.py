"""Reading ganforge checkpoints as data, not code.

A checkpoint is loaded with `weights_only=True` (no pickled objects run), and networks are rebuilt
only from ganforge's own model classes named in it — never by instantiating an arbitrary
`_target_` from the file or its stored config, which would let a downloaded checkpoint run code.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.errors import CheckpointError

MODEL_PACKAGE = "ganforge.models."


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, or one CheckpointError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt={path} does not exist; pass the path of a .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"ckpt={path} is corrupt, truncated or not a PyTorch checkpoint ({first_line}); "
            "use another checkpoint, e.g. checkpoints/iter_*.ckpt of the same run"
        ) from None
    if not isinstance(ckpt, dict) or "ganforge" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"ckpt={path} is not a ganforge checkpoint (no 'ganforge' record); "
            "pass a checkpoint written by ganforge-train"
        )
    return ckpt


def model_class(class_path: str, path: str | Path = "<checkpoint>") -> type[nn.Module]:
    """Resolve a class path to a ganforge model class, refusing anything else."""
    module_name, _, name = class_path.rpartition(".")
    if not module_name.startswith(MODEL_PACKAGE) or not name.isidentifier():
        raise CheckpointError(
            f"ckpt={path} names model class {class_path!r}, which is not one of ganforge's "
            f"models ({MODEL_PACKAGE}*); refusing to build it"
        )
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise CheckpointError(
            f"ckpt={path} names model class {class_path!r}, which this ganforge version lacks; "
            "upgrade ganforge or use a checkpoint from this version"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module_name):
        raise CheckpointError(f"ckpt={path}: {class_path!r} is not a ganforge model class")
    return cls


def build_network(ckpt: dict[str, Any], which: str, path: str | Path = "<checkpoint>") -> nn.Module:
    """Rebuild `which` ("generator", "discriminator" or "generator_ema") with its weights."""
    record = ckpt["ganforge"]
    desc = record["generator" if which == "generator_ema" else which]
    init_args = desc.get("init_args", {})
    if not isinstance(init_args, dict):
        raise CheckpointError(f"ckpt={path}: malformed init_args for the {which}")
    net = model_class(desc["class"], path)(**init_args)
    prefix = {"generator": "G.", "discriminator": "D.", "generator_ema": "G_ema."}[which]
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"ckpt={path}: the {which} weights do not fit: {err}") from None
    return net.eval()


def load_generator(path: str | Path, ema: bool = True) -> tuple[nn.Module, dict[str, Any], bool]:
    """The generator of a checkpoint (EMA when asked and present), its record, and whether EMA."""
    ckpt = load_checkpoint(path)
    use_ema = bool(ema and ckpt["ganforge"].get("has_ema"))
    net = build_network(ckpt, "generator_ema" if use_ema else "generator", path)
    return net.requires_grad_(False), ckpt["ganforge"], use_ema
