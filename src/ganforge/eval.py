"""`ganforge-eval ckpt=PATH metrics.names=[fid,kid,pr] metrics.n_samples=N`: evaluate a checkpoint's
generator by the registry's metrics its data can be scored by (`metrics.registry`), print a table
and write JSON holding every number with its protocol. Stacked MNIST at the papers' protocol:
`ganforge-eval ckpt=PATH metrics.names=[stacked_modes] metrics.n_samples=26000`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ganforge.cli import config_dir, report_user_errors, run_hydra_main
from ganforge.errors import CheckpointError, ConfigError, check_bool

# torch, Lightning and everything that imports them are imported inside the functions that use
# them: the command's first line is out before they load (seconds of CPU, far longer on a busy
# machine; README, "ganforge-eval").
if TYPE_CHECKING:
    import torch

    from ganforge import checkpoint
    from ganforge.data.base import InMemoryDataModule

log = logging.getLogger("ganforge")

# Data arguments never taken from a checkpoint: how the loader batches (LOADER_KEYS: irrelevant
# to the reference images) and the label (the dataset's name is the conf/data option's own).


def _data_dirs() -> list[Path]:
    """conf/data folders on Hydra's search path, first wins: those the user added with
    hydra.searchpath=[file://DIR], then ganforge's own conf/data."""
    dirs = []
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.schema == "file" and (Path(source.path) / "data").is_dir():
                dirs.append(Path(source.path) / "data")
    return [*dirs, config_dir() / "data"]


def data_options() -> list[str]:
    """The datasets with a config on the search path: the only names a checkpoint may select."""
    return sorted({p.stem for d in _data_dirs() for p in d.glob("*.yaml")})


def data_yaml(name: str) -> DictConfig:
    found = [d / f"{name}.yaml" for d in _data_dirs() if (d / f"{name}.yaml").is_file()]
    if not found:
        raise ConfigError(f"data={name} is not one of ganforge's datasets {data_options()}")
    return OmegaConf.load(found[0])


class _Source(NamedTuple):
    """What the reference data needs of a checkpoint: its record's meta and how to name it."""

    meta: dict[str, Any]
    where: str


def reference_datamodule(
    ckpt: checkpoint.Checkpoint | dict[str, Any], cfg: DictConfig
) -> InMemoryDataModule:
    """The reference data: the user's, never a path or a loader input read from the checkpoint.

    `ckpt` is a loaded `checkpoint.Checkpoint`, or the record `checkpoint.load_generator`
    returns (`cfg.ckpt` then names the file in messages).

    `data=NAME` on the command line picks `conf/data/NAME.yaml` outright (with any `data.*`
    overrides). Without it, the dataset the checkpoint was trained on: its name looked up among
    ganforge's own `conf/data` options, that config's defaults, then the run's stored arguments
    that change which images are the data (e.g. `n_samples`, `holdout`, `seed`) — checked as plain
    numbers, strings and booleans against that config's keys, and never a path (those come from
    this machine's `paths.*` or `data.root=`) — then the command line's `data.*`.
    Nothing from the checkpoint reaches `instantiate`, and only values checked to be plain data
    without `${` reach OmegaConf (so nothing is interpolated).
    """
    from hydra.utils import get_class

    from ganforge import checkpoint
    from ganforge.evaluation.identity import LOADER_KEYS

    if isinstance(ckpt, dict):
        meta = ckpt.get("meta", {})
        if not isinstance(meta, dict):
            raise CheckpointError(f"ckpt={cfg.get('ckpt')}: the record's meta is not a mapping")
        source = _Source(meta, f"ckpt={cfg.get('ckpt')}")
    else:
        source = _Source(ckpt.meta, ckpt.where)
    user = OmegaConf.to_container(cfg.get("data") or OmegaConf.create({}), resolve=True)
    assert isinstance(user, dict)
    chosen = "_target_" in user  # `data=NAME` merged the whole option into cfg.data
    if chosen:
        name = _chosen_option(user)
    else:
        name = source.meta.get("data")
        if not isinstance(name, str) or name not in data_options():
            raise CheckpointError(
                f"{source.where} was trained on data={checkpoint.short(name)}, which is not one of "
                f"ganforge's datasets {data_options()}; pick the reference data with data=NAME "
                "(and data.root=PATH)"
            )
    yaml = data_yaml(name)
    target = str(yaml["_target_"])
    raw = OmegaConf.to_container(yaml, resolve=False)
    assert isinstance(raw, dict)
    # Paths (`${paths.data_dir}`) and values derived from others (`n_classes: ${.n_modes}`) are
    # this machine's or recomputed, never the checkpoint's.
    derived = {k for k, v in raw.items() if isinstance(v, str) and "${" in v}
    stored: dict[str, Any] = {}
    if not chosen and name == source.meta.get("data"):
        stored = _stored_data_args(source, raw, derived | LOADER_KEYS | {"name"})
    for key in user:
        if key not in raw and user[key] is not None:
            raise ConfigError(
                f"data.{key} is not an option of data={name} (it has "
                f"{sorted(k for k in raw if k != '_target_')}); drop the override"
            )
    # null is "not given" (eval.yaml's data.root placeholder): the stored value or default holds.
    given = {k: v for k, v in user.items() if k in raw and v is not None}
    # The stored values are checked plain data without "${": merging them interpolates nothing.
    merged = OmegaConf.merge(yaml, stored, given, {"batch_size": 2, "num_workers": 0})
    kwargs = OmegaConf.to_container(
        OmegaConf.create({"data": merged, "paths": cfg.paths}), resolve=True
    )["data"]
    kwargs.pop("_target_")
    try:
        return get_class(target)(**kwargs)
    except ConfigError as err:
        if stored and not given:
            raise CheckpointError(
                f"{source.where}: its data arguments are invalid ({err})"
            ) from None
        raise


def _chosen_option(user: dict[str, Any]) -> str:
    """The conf/data option the command line picked with data=NAME."""
    name = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
    return str(name or user.get("name"))  # data_yaml names an unknown one


def _stored_data_args(
    source: _Source, defaults: dict[str, Any], excluded: set[str]
) -> dict[str, Any]:
    """The checkpoint's data arguments that may stand in for the config's defaults."""
    from ganforge import checkpoint

    stored = source.meta.get("data_args", {})
    if not isinstance(stored, dict):
        raise CheckpointError(f"{source.where}: the record's meta.data_args is not a mapping")
    taken = {}
    for key, value in stored.items():
        if isinstance(key, str) and key.startswith("_"):
            # ganforge-train stores no `_target_` (or any Hydra key): one here is crafted.
            raise CheckpointError(
                f"{source.where}: meta.data_args has {key!r}, which ganforge never stores and "
                "which would name code to run: refused. Use a checkpoint from a source you trust"
            )
        if not isinstance(key, str) or key not in defaults:
            raise CheckpointError(
                f"{source.where}: meta.data_args has {checkpoint.short(key)}, which "
                f"data={defaults['name']} does not take; the file is damaged or not from this "
                "ganforge. Pick the reference data yourself with data=NAME"
            )
        if key in excluded:
            continue
        problem = checkpoint.data_value_problem(value, defaults[key])
        if problem:
            raise CheckpointError(
                f"{source.where}: meta.data_args.{key}={checkpoint.short(value)} {problem}; the "
                "file is damaged or crafted. Pick the reference data yourself with data=NAME"
            )
        taken[key] = value
    return taken


def _is_path(raw: Any) -> bool:
    """A config value that is a filesystem location: it is built from `${paths.*}`."""
    return isinstance(raw, str) and "${paths." in raw


def _check_fits(
    generator: torch.nn.Module,
    datamodule: InMemoryDataModule,
    ckpt: checkpoint.Checkpoint,
    device: torch.device,
) -> None:
    """One sample drawn up front: a generator of 2-D points scored against images (or images of
    another shape) would otherwise fail, or mean nothing, after the reference statistics."""
    import torch

    from ganforge.models.protocols import run_generator

    z = torch.zeros(1, generator.z_dim, device=device)
    n_classes = getattr(generator, "n_classes", None)
    with torch.no_grad():
        x = run_generator(
            generator, z, torch.zeros(1, dtype=torch.long, device=device) if n_classes else None
        )
    if datamodule.is_image:
        size = datamodule.image_size
        want: tuple[int | None, ...] = (datamodule.channels, size, size)
    else:
        want = (datamodule.real_samples(1).shape[1],)
    if tuple(x.shape[1:]) != want:
        raise ConfigError(
            f"{ckpt.where} draws samples of shape {tuple(x.shape[1:])} but data={datamodule.name} "
            f"holds {want}; pick the reference data the generator was trained on with data=NAME "
            f"(it was trained on data={ckpt.meta.get('data')})"
        )


def resolve_device(device: Any) -> torch.device:
    """`device=auto|cpu|cuda|cuda:N`, checked against this machine before anything is computed."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"device={device} must be auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device} but this machine has no usable CUDA GPU; use device=cpu "
                "(or device=auto, which picks a GPU when there is one)"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device} but this machine has {torch.cuda.device_count()} GPU(s); "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(device)
    raise ConfigError(f"device={device!r} must be auto, cpu, cuda or cuda:N")


def _announce(cfg: DictConfig) -> None:
    """The command's first line, from the composed config alone (nothing read or imported yet):
    the checkpoint and what will be computed. The metrics its data can be scored by, and the
    checks, follow once it is read."""
    m = cfg.get("metrics") or {}
    names = m.get("names")
    shown = f"[{','.join(map(str, names))}]" if OmegaConf.is_list(names) else names
    count = m.get("reference_count", None)
    log.info(
        "ganforge-eval: ckpt=%s: metrics.names=%s (those its data can be scored by), "
        "metrics.n_samples=%s, metrics.reference_count=%s; loading torch, Lightning and the "
        "checkpoint",
        cfg.get("ckpt"),
        shown,
        m.get("n_samples"),
        "null (the whole split)" if count is None else count,
    )


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt`'s generator and write the JSON report; every input and the report's
    location are checked before the first sample is generated."""
    started = time.monotonic()
    _announce(cfg)
    import torch

    from ganforge import checkpoint
    from ganforge.evaluation import Evaluator
    from ganforge.evaluation.progress import duration
    from ganforge.metrics.fetch_inception import ensure_weights
    from ganforge.metrics.files import atomic_write_bytes
    from ganforge.metrics.registry import INCEPTION
    from ganforge.models.protocols import run_generator
    from ganforge.outputs import writable_file

    check_bool("ema", cfg.ema)
    device = resolve_device(cfg.device)
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    assert isinstance(metrics, dict)
    evaluator = Evaluator(**metrics, key="metrics")
    ckpt = checkpoint.load(
        cfg.ckpt, allowed_classes=checkpoint.allowed_option(cfg.get(checkpoint.ALLOWED_KEY))
    )
    generator, used_ema = ckpt.build_generator(ema=cfg.ema)
    generator.to(device)
    datamodule = reference_datamodule(ckpt, cfg)
    _check_fits(generator, datamodule, ckpt, device)
    # A final score: on Stacked MNIST, fewer samples than modes is refused (compares with nothing).
    evaluator.check_final(datamodule)
    out = writable_file("out", cfg.out or ckpt.path.with_suffix(".eval.json"))
    log.info(
        "evaluation: read %s (iteration %s, %s generator, data=%s) in %s",
        ckpt.path,
        ckpt.iteration,
        "EMA" if used_ema else "raw",
        datamodule.name,
        duration(time.monotonic() - started),
    )
    # Find (or download) the dataset's files now: cheap, and a missing dataset is then known
    # before the Inception weights are built and any sample is generated.
    datamodule.prepare_data()
    if INCEPTION in evaluator.needs(datamodule):
        # Cold start: build (or check) the Inception weights now, not after the samples.
        ensure_weights(evaluator.inception_weights)
    evaluator.prepare(datamodule)  # the digit classifier, trained or read, and its accuracy

    @torch.no_grad()
    def generate(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return run_generator(generator, z, y)

    results = evaluator(
        generate,
        generator.z_dim,
        getattr(generator, "n_classes", None),
        datamodule,
        device,
        ema=used_ema,
    )
    report = {
        "ckpt": str(ckpt.path.resolve()),
        "iteration": ckpt.iteration,
        "generator": "ema" if used_ema else "raw",
        "data": datamodule.name,
        "metrics": {k: v for k, v in results.items() if k != "protocol"},
        "protocol": results.get("protocol"),
    }
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    _print_table(report, out)
    return report


def _print_table(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from ganforge.evaluation import flat_metrics

    table = Table(
        title=f"{report['data']} · iteration {report['iteration']} · {report['generator']} G"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in flat_metrics(report["metrics"]).items():
        table.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    # How the numbers were made (sample count, classifier accuracy, digit source, ...).
    protocol = report.get("protocol") or {}
    console.print("protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    console.print(f"written to {out}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    evaluate_checkpoint(cfg)


def main() -> None:
    # In a -m sweep (e.g. over checkpoints) a job's user error is logged and the sweep goes on.
    run_hydra_main(_hydra_main)


if __name__ == "__main__":
    main()
