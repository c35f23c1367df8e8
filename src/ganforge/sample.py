"""`ganforge-sample ckpt=PATH n=64 out=grid.png`: a sample grid (or latent interpolation) from a
checkpoint, using the EMA generator when the checkpoint has one."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ganforge.callbacks.images import image_grid
from ganforge.callbacks.samples import scatter_image
from ganforge.checkpoint import load_generator
from ganforge.cli import report_user_errors
from ganforge.errors import ConfigError
from ganforge.train import config_dir

log = logging.getLogger("ganforge")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation: Gaussian latents live near a sphere, where a straight line would
    pass through low-density, atypically small-norm points (White 2016)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latents(z_dim: int, n: int, interpolate: bool, steps: int, seed: int) -> tuple[Tensor, int]:
    """The noise batch and the grid's row length."""
    g = torch.Generator().manual_seed(seed)
    if not interpolate:
        return torch.randn(n, z_dim, generator=g), max(1, round(n**0.5))
    rows = max(1, n // steps)
    a, b = torch.randn(rows, 1, z_dim, generator=g), torch.randn(rows, 1, z_dim, generator=g)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return slerp(a, b, t).reshape(rows * steps, z_dim), steps


def class_labels(n_classes: int | None, n: int, label: int | None, per_row: int) -> Tensor | None:
    """Labels for a conditional generator: one class per row, or all `label`."""
    if not n_classes:
        if label is not None:
            raise ConfigError(f"label={label} but this generator is not class-conditional")
        return None
    if label is not None:
        if not 0 <= label < n_classes:
            raise ConfigError(f"label={label} must be in [0, {n_classes - 1}]")
        return torch.full((n,), label, dtype=torch.long)
    return (torch.arange(n) // per_row) % n_classes


@torch.no_grad()
def generate(net: nn.Module, z: Tensor, y: Tensor | None, batch: int = 256) -> Tensor:
    out = []
    for i in range(0, z.shape[0], batch):
        zi = z[i : i + batch]
        out.append(net(zi) if y is None else net(zi, y[i : i + batch]))
    return torch.cat(out)


def sample(cfg: DictConfig) -> Path:
    """Write the picture asked for by `cfg` and return its path."""
    if cfg.n < 1:
        raise ConfigError(f"n={cfg.n} must be a positive integer")
    if cfg.interpolate and cfg.steps < 2:
        raise ConfigError(f"steps={cfg.steps} must be at least 2 for an interpolation")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"out={out} exists; choose another path or pass overwrite=true")
    net, record, used_ema = load_generator(cfg.ckpt, ema=cfg.ema)
    z, per_row = latents(net.z_dim, cfg.n, cfg.interpolate, cfg.steps, cfg.seed)
    n_classes = getattr(net, "n_classes", None)
    if n_classes and not cfg.interpolate and cfg.label is None:
        per_row = max(1, cfg.n // n_classes)  # one row per class
        z = torch.randn(
            n_classes * per_row, net.z_dim, generator=torch.Generator().manual_seed(cfg.seed)
        )
    y = class_labels(n_classes, z.shape[0], cfg.label, per_row)
    x = generate(net, z, y)
    if getattr(net, "is_image", x.dim() == 4):
        image = image_grid(x, nrow=per_row)
    else:
        image = scatter_image(x, None, None, f"iteration {record.get('iteration', '?')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(image).save(out)
    which = "EMA" if used_ema else "raw"
    log.info(
        "wrote %s (%d samples, %s generator, iteration %s)",
        out,
        x.shape[0],
        which,
        record.get("iteration"),
    )
    return out


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="sample")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    sample(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
