"""The experiment trackers a run logs to, set up as their users expect.

W&B: a run is named by what differs (the job's overrides, else the experiment), a multirun's jobs
share a group (the sweep's folder), `job_type` is the task and the tags say experiment, model,
loss and data — each only where `logger.wandb.*` leaves it null. The config is logged once, whole
(Lightning's own copy of the system's hyperparameters, flat beside it, is switched off in
`train`). At the end the run's summary goes to W&B's run summary and TensorBoard's HParams tab
gets the settings that matter with the final metrics.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

from ganforge.report.table import flat

# Overrides that say where or how a run logs, not what it trains: left out of W&B run names.
NOT_IN_NAMES = ("logger", "paths", "hydra", "num_threads", "ckpt_path", "resume", "trainer.enable")
# The settings TensorBoard's HParams tab shows (those that change what is trained).
HPARAM_GROUPS = ("seed", "train", "system", "data", "model", "loss", "optim")
MAX_NAME = 128  # W&B shortens longer display names in its tables anyway
# The final metrics beside them (health/* are diagnostics, summed up by the health episodes).
SHOWN = ("val/", "train/d_loss", "train/g_loss", "train/iterations")


def wandb_run(cfg: DictConfig, node: DictConfig) -> dict[str, Any]:
    """name, group, job_type and tags for `logger.wandb`, where the config leaves them null."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    choices = dict(hydra.runtime.choices) if hydra is not None else {}
    experiment = choices.get("experiment")
    chosen: dict[str, Any] = {}
    if node.get("name") is None:
        typed = [str(o) for o in (hydra.overrides.task if hydra is not None else [])]
        differs = [o for o in typed if not o.lstrip("+~").startswith(NOT_IN_NAMES)]
        multirun = hydra is not None and hydra.mode == RunMode.MULTIRUN
        # The jobs of a multirun, or a W&B Sweeps agent's runs, differ by the swept keys; the
        # rest is the same in all of them.
        swept = _swept_keys(sys.argv[1:]) if multirun else _agent_keys()
        differs = [o for o in differs if o.split("=", 1)[0] in swept] or differs
        chosen["name"] = (",".join(differs) or experiment or cfg.get("task_name"))[:MAX_NAME]
    if node.get("group") is None and hydra is not None and hydra.mode == RunMode.MULTIRUN:
        # The sweep's folder (a job's folder is <sweep>/<job number>): the same in every job,
        # also when a launcher runs them in other processes.
        sweep = Path(str(hydra.runtime.output_dir)).parent.name
        chosen["group"] = f"{cfg.get('task_name')}-{sweep}"
    if node.get("tags") is None:
        tags = [experiment, _name(cfg, "model"), _name(cfg, "loss"), _name(cfg, "data")]
        chosen["tags"] = list(dict.fromkeys(str(t)[:64] for t in tags if t))
    return chosen


def _swept_keys(argv: list[str]) -> set[str]:
    """The keys a `-m` command line sweeps (`loss=hinge,wgan_gp`), as typed with their prefix;
    empty when this process was not started by that command line (a launcher's worker)."""
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if "=" in a])
    except HydraException:
        return set()
    return {o.get_key_element() for o in parsed if o.is_sweep_override()}


def _agent_keys() -> set[str]:
    """The parameters of the W&B sweep when a `wandb agent` started this run: the agent writes
    them to $WANDB_SWEEP_PARAM_PATH (`{key: {value: ...}}`) before it runs the command."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return set()
    try:
        params = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return set()
    return {str(k) for k in params if k != "wandb_version"} if isinstance(params, dict) else set()


def _name(cfg: DictConfig, group: str) -> str | None:
    node = cfg.get(group)
    return str(node.get("name")) if isinstance(node, DictConfig) and node.get("name") else None


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The resolved config, once, to every logger (nested: W&B shows it as a tree)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)  # type: ignore[arg-type]


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The settings that matter, flat, as values TensorBoard's HParams tab takes."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    chosen = {k: resolved[k] for k in HPARAM_GROUPS if k in resolved}
    out = {}
    for key, value in flat(chosen).items():
        # One level deep: model.hidden, optim.lr_d, system.n_critic; below that are the same
        # values again as wired into classes (system.g_optimizer.lr is optim.lr_g).
        if key.count(".") > 1 or "_target_" in key or "_partial_" in key:
            continue
        if value is None or isinstance(value, (list, tuple, dict)):
            value = str(value)
        out[key] = value
    return out


def wandb_run_id(loggers: list[Logger]) -> str | None:
    """The W&B run's id among a run's loggers (None without W&B): the checkpoint record keeps it,
    so a resumed run continues the same W&B run (train.py hands it back to `logger.wandb.id`)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            return str(logger.version)
    return None


def log_summary(loggers: list[Logger], cfg: DictConfig, summary: dict[str, Any]) -> None:
    """The run's summary where each tracker shows one: W&B's run summary, TensorBoard's HParams
    (settings beside the final metrics, `final/<metric>` so the curves get no extra point)."""
    from ganforge.summary import wandb_summary

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.summary.update(wandb_summary(summary))
        elif isinstance(logger, TensorBoardLogger):
            final = {f"final/{k}": v for k, v in summary["final"].items() if k.startswith(SHOWN)}
            logger.log_hyperparams(hparams(cfg), metrics=final)


def finish(loggers: list[Logger]) -> None:
    """Close the W&B run here, so the next job of a multirun (same process) starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, except that a run resumed into its own directory keeps what it
    logged up to the checkpoint (`keep_until`, its iteration). Lightning's deletes an existing
    csv/metrics.csv, so a run that ganforge-reproduce resumed after a kill lost its curves: the
    mode counts over iterations, ganforge-report's plots. Rows after the checkpoint go, because
    the resumed run logs those iterations again (the same values: resume is exact)."""

    def __init__(self, *args: Any, keep_until: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_until = keep_until

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_until)
        return self._experiment


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_until: int | None) -> None:
        self._keep_until = keep_until
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_until is None or not path.is_file():
            super()._check_log_dir_exists()  # a fresh run: Lightning's own rule
            return
        text = path.read_text()
        if not text.endswith("\n"):  # the last row was cut off by the kill
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(text.splitlines())
        header = list(reader.fieldnames or [])
        kept = [r for r in reader if (step := _step(r)) is not None and step <= self._keep_until]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(path)
        # Lightning's writer appends under this header and rewrites the file when a key is new.
        self.metrics_keys = header


def _step(row: dict[str, str | None]) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None
