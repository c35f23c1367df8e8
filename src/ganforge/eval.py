"""`ganforge-eval ckpt=PATH metrics.names=[fid,kid,pr] metrics.n_samples=N`: evaluate a checkpoint's
generator, print a table and write JSON holding every number with its protocol."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from ganforge.checkpoint import load_checkpoint, load_generator
from ganforge.cli import report_user_errors
from ganforge.errors import CheckpointError, ConfigError
from ganforge.evaluation import Evaluator
from ganforge.train import config_dir

log = logging.getLogger("ganforge")


def reference_datamodule(record: dict[str, Any], cfg: DictConfig) -> Any:
    """The training dataset, from ganforge's own `conf/data/<name>.yaml` (never a `_target_` read
    from the checkpoint), with the run's stored arguments and then the command line's on top."""
    name = record.get("meta", {}).get("data")
    yaml = config_dir() / "data" / f"{name}.yaml"
    if not name or not yaml.is_file():
        raise CheckpointError(
            f"ckpt={cfg.ckpt} was trained on data={name!r}, which this ganforge has no config for"
        )
    data = OmegaConf.merge(
        OmegaConf.load(yaml),
        record["meta"].get("data_args", {}),
        cfg.get("data") or {},
        {"_target_": OmegaConf.load(yaml)["_target_"]},
    )
    root = OmegaConf.create({"data": data, "paths": cfg.paths})
    return instantiate(root.data, batch_size=2)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    record = load_checkpoint(cfg.ckpt)["ganforge"]
    generator, _, used_ema = load_generator(cfg.ckpt, ema=cfg.ema)
    device = torch.device(cfg.device if cfg.device != "auto" else _auto_device())
    generator.to(device)
    datamodule = reference_datamodule(record, cfg)
    evaluator = Evaluator(**OmegaConf.to_container(cfg.metrics, resolve=True))

    @torch.no_grad()
    def generate(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return generator(z) if y is None else generator(z, y)

    results = evaluator(
        generate,
        generator.z_dim,
        getattr(generator, "n_classes", None),
        datamodule,
        device,
        ema=used_ema,
    )
    report = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "iteration": record.get("iteration"),
        "generator": "ema" if used_ema else "raw",
        "data": datamodule.name,
        "metrics": {k: v for k, v in results.items() if k != "protocol"},
        "protocol": results.get("protocol"),
    }
    out = Path(cfg.out) if cfg.out else Path(cfg.ckpt).with_suffix(".eval.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report, out)
    return report


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _print_table(report: dict[str, Any], out: Path) -> None:
    table = Table(
        title=f"{report['data']} · iteration {report['iteration']} · {report['generator']} G"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    console.print(f"written to {out}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    if not cfg.metrics.names:
        raise ConfigError("metrics.names is empty; e.g. metrics.names=[fid,kid,pr]")
    evaluate_checkpoint(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
