"""`ganforge-sample ckpt=PATH n=64 out=grid.png`: a sample grid (or latent interpolation) from a
checkpoint, using the EMA generator when the checkpoint has one. A checkpoint of a model class
outside ganforge is sampled when the command line allows it:
`allowed_classes=[mypkg.nets.Generator,mypkg.nets.Discriminator]` (see `checkpoint.py`)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from ganforge.cli import config_dir, report_user_errors, run_hydra_main
from ganforge.errors import CheckpointError, ConfigError, check_bool, check_int
from ganforge.metrics.files import atomic_write_bytes
from ganforge.outputs import writable_file

if TYPE_CHECKING:
    from torch import Tensor, nn

# torch, Lightning and the checkpoint reader are imported where they are used, so the command's
# first line is out within a second of launch (their import takes ~10 s on a busy CPU).
log = logging.getLogger("ganforge")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation: Gaussian latents live near a sphere, where a straight line would
    pass through low-density, atypically small-norm points (White 2016)."""
    import torch

    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latents(z_dim: int, n: int, interpolate: bool, steps: int, seed: int) -> tuple[Tensor, int]:
    """The noise batch and the grid's row length."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if not interpolate:
        return torch.randn(n, z_dim, generator=g), max(1, round(n**0.5))
    rows = max(1, n // steps)
    a, b = torch.randn(rows, 1, z_dim, generator=g), torch.randn(rows, 1, z_dim, generator=g)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return slerp(a, b, t).reshape(rows * steps, z_dim), steps


def class_labels(n_classes: int | None, n: int, label: int | None, per_row: int) -> Tensor | None:
    """Labels for a conditional generator: one class per row, or all `label`."""
    import torch

    if not n_classes:
        if label is not None:
            raise ConfigError(f"label={label} but this generator is not class-conditional")
        return None
    if label is not None:
        if not 0 <= label < n_classes:
            raise ConfigError(f"label={label} must be in [0, {n_classes - 1}]")
        return torch.full((n,), label, dtype=torch.long)
    return (torch.arange(n) // per_row) % n_classes


def generate(net: nn.Module, z: Tensor, y: Tensor | None, batch: int = 256) -> Tensor:
    """G's samples for `z` (and labels `y`) in batches; more than one batch logs its progress
    (`sampling: 2560/10000 samples (...)` once it takes a while, and its count and time)."""
    import torch

    from ganforge.evaluation.progress import with_progress
    from ganforge.models.protocols import run_generator

    drawn = (
        run_generator(net, z[i : i + batch], None if y is None else y[i : i + batch])
        for i in range(0, z.shape[0], batch)
    )
    if z.shape[0] > batch:
        drawn = with_progress(drawn, z.shape[0], "samples", stage="sampling")
    with torch.no_grad():
        return torch.cat(list(drawn))


# Samples in one picture at most: a 100x100 grid is already larger than any screen.
MAX_SAMPLES = 10_000


def image_format(out: Path) -> str:
    """PIL's format for `out`'s extension, or a ConfigError listing the ones it knows."""
    from PIL import Image

    Image.init()  # registers every format plugin, so the list is complete
    known = Image.registered_extensions()
    fmt = known.get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        what = f"an unknown image extension {out.suffix!r}" if out.suffix else "no image extension"
        raise ConfigError(
            f"out={out} has {what}; end it in .png (or another format PIL writes: .jpg, .webp, "
            ".bmp, .tif, ...)"
        )
    return fmt


def check_options(cfg: DictConfig) -> tuple[str, ...]:
    """Every option as the value it must be, before the checkpoint is read; returns the
    allowed model classes."""
    from ganforge import checkpoint

    allowed = checkpoint.allowed_option(cfg.get(checkpoint.ALLOWED_KEY))
    check_int("n", cfg.n)
    if cfg.n > MAX_SAMPLES:
        raise ConfigError(f"n={cfg.n} is more than {MAX_SAMPLES} samples in one picture")
    check_int("seed", cfg.seed, minimum=0)
    for key in ("overwrite", "ema", "interpolate"):
        check_bool(key, cfg[key])
    if cfg.interpolate:
        check_int("steps", cfg.steps, minimum=2)
        if cfg.steps > MAX_SAMPLES:
            raise ConfigError(f"steps={cfg.steps} is more than {MAX_SAMPLES} samples in one row")
    if cfg.label is not None:
        check_int("label", cfg.label, minimum=0)
    return allowed


def sample(cfg: DictConfig) -> Path:
    """Write the picture asked for by `cfg` and return its path."""
    import torch

    from ganforge import checkpoint
    from ganforge.callbacks.images import image_grid
    from ganforge.callbacks.samples import scatter_image
    from ganforge.models.protocols import check_generator, is_image

    allowed = check_options(cfg)
    out = Path(cfg.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"out={out} is a directory; pass a file path, e.g. out={out}/grid.png")
    fmt = image_format(out)
    if out.exists() and not out.is_dir() and not cfg.overwrite:
        raise ConfigError(f"out={out} exists; choose another path or pass overwrite=true")
    ckpt = checkpoint.load(cfg.ckpt, allowed_classes=allowed)
    net, used_ema = ckpt.build_generator(ema=cfg.ema)  # refuses NaN/inf weights
    check_generator(net, key=f"{ckpt.where}'s generator")
    out = writable_file("out", out, overwrite=cfg.overwrite)
    z, per_row = latents(net.z_dim, cfg.n, cfg.interpolate, cfg.steps, cfg.seed)
    n_classes = net.n_classes
    if n_classes and not cfg.interpolate and cfg.label is None:
        per_row = max(1, cfg.n // n_classes)  # one row per class
        z = torch.randn(
            n_classes * per_row, net.z_dim, generator=torch.Generator().manual_seed(cfg.seed)
        )
    y = class_labels(n_classes, z.shape[0], cfg.label, per_row)
    x = generate(net, z, y)
    if not x.isfinite().all():
        # Finite weights can still overflow; a NaN picture would look like a drawing bug.
        raise CheckpointError(
            f"{ckpt.where}: the generator's samples are not finite (NaN or inf), although its "
            "weights are; the run had diverged by this save: use an earlier checkpoint of it"
        )
    if is_image(net):
        image = image_grid(x, nrow=per_row)
    else:
        image = scatter_image(x, None, None, f"iteration {ckpt.iteration}")
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if fmt == "JPEG" and picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")  # JPEG has no alpha channel
    picture.save(buffer, format=fmt)
    atomic_write_bytes(out, buffer.getvalue())
    which = "EMA" if used_ema else "raw"
    log.info(
        "wrote %s (%d samples, %s generator, iteration %s)", out, x.shape[0], which, ckpt.iteration
    )
    return out


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="sample")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    log.info(
        "ganforge-sample: ckpt=%s, n=%s, out=%s; loading torch, Lightning and the checkpoint",
        cfg.get("ckpt"),
        cfg.get("n"),
        cfg.get("out"),
    )
    sample(cfg)


def main() -> None:
    # In a -m sweep (e.g. over checkpoints) a job's user error is logged and the sweep goes on.
    run_hydra_main(_hydra_main)


if __name__ == "__main__":
    main()
