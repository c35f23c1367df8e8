"""`ganforge-train`: compose `conf/train.yaml`, build data, system and trainer, fit.

`train(cfg)` is a plain function (usable from notebooks and tests); `main` is the thin Hydra
wrapper that turns user errors into one message and an exit code instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from ganforge import checkpoint
from ganforge import loggers as loggers_
from ganforge.callbacks.checkpoint import IterationCheckpoint, describe_after_divergence
from ganforge.callbacks.evaluation import PeriodicEvaluation
from ganforge.callbacks.progress import IterationProgress
from ganforge.cli import config_dir, record_job, report_user_errors, run_hydra_main
from ganforge.errors import ConfigError, GanforgeError, NonFiniteLossError, NonFiniteWeightsError
from ganforge.metrics.fetch_inception import ensure_weights
from ganforge.metrics.registry import INCEPTION
from ganforge.models.protocols import check_models
from ganforge.preflight import check_moved_overrides, check_pack, check_run, source_key
from ganforge.summary import headline, run_summary, summary_lines
from ganforge.system import GANSystem

log = logging.getLogger("ganforge")
# Callbacks that write checkpoints atomically (through a `*.ckpt.tmp`) into their `dirpath`.
CHECKPOINT_WRITERS = (IterationCheckpoint, PeriodicEvaluation)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the GAN described by `cfg`; return the final metrics (floats keyed `stage/name`).

    Everything a run needs is checked before iteration 1, in order of cost: config values, paths
    and logger services (nothing read or written), then the networks against the checkpoint to
    resume, then the FID weights; only then does anything get written.
    """
    started = time.monotonic()
    check_run(cfg)
    ckpt_path = cfg.get("ckpt_path") or _auto_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)

    # _convert_="all": optimizer kwargs become plain lists/dicts, which load with weights_only.
    system: GANSystem = build(cfg.system, meta=run_meta(cfg), _convert_="all")
    # system.n_critic D updates each take a fresh real batch, so one loader batch holds n_critic
    # (the system has checked the value). The training order is seeded by the run's seed; the
    # data's own `seed` draws toy datasets.
    datamodule = build(cfg.data, batches_per_step=system.n_critic, shuffle_seed=cfg.seed)
    check_models(system.G, system.D, image=datamodule.is_image, data=cfg.data.name)
    check_pack(datamodule.batch_size, system.pack)
    record = _check_resume(cfg, ckpt_path, system) if ckpt_path else {}
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        # Read the data now rather than at fit (setup caches it): a missing or malformed dataset
        # stops the run before anything is written. Only the launching process: DDP's other
        # ranks start inside fit, after rank 0 has prepared (downloaded) the files.
        datamodule.prepare_data()
        datamodule.setup("fit")
    # A callback set to null (e.g. `callbacks.evaluation=null`) is switched off.
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    prepare_evaluation(callbacks, datamodule)
    own_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    if cfg.trainer.get("enable_progress_bar", True) and not own_bar:
        # Progress in GAN iterations in Lightning's progress-bar slot (its own bar counts epochs).
        callbacks.append(IterationProgress(cfg.train.get("max_iters"), cfg.train.log_every))
    # A logger set to null (e.g. `logger.csv=null` beside W&B) is switched off.
    loggers = [
        build(
            c,
            **_resume_wandb(name, c, record),
            **_wandb_run(name, cfg, c),
            **_resume_csv(c, record),
        )
        for name, c in (cfg.get("logger") or {}).items()
        if c is not None
    ]
    trainer: L.Trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks)

    _remove_stale_tmp(callbacks, ckpt_path)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    # The config is logged once, whole (GANSystem keeps its hyperparameters out of the loggers:
    # W&B showed every system.* setting twice); they stay in the checkpoint.
    loggers_.log_config(trainer.loggers, cfg)
    try:
        # weights_only=True said explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the user's
        # environment must not turn a downloaded checkpoint into code that runs.
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics: dict[str, Any] = dict(system.last_metrics)
        metrics["train/iterations"] = system.iteration
        summary = run_summary(metrics, out, time.monotonic() - started)
        loggers_.log_summary(trainer.loggers, cfg, summary)
    except (NonFiniteLossError, NonFiniteWeightsError) as err:
        # Say honestly what the checkpoints hold: weights may have diverged (finite but huge)
        # well before the loss became NaN, and last.ckpt may be from then.
        saver = next((c for c in callbacks if isinstance(c, IterationCheckpoint)), None)
        if saver is None:
            raise
        raise type(err)(f"{err}. {describe_after_divergence(saver.dirpath)}") from None
    finally:
        loggers_.finish(trainer.loggers)
    if trainer.is_global_zero:
        for line in summary_lines(summary):
            log.info(line)
    metrics["output_dir"] = str(out)
    metrics["summary"] = summary
    return metrics


def run_meta(cfg: DictConfig) -> dict[str, Any]:
    """What the run was trained on, as the checkpoint record keeps it (plain data)."""
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "data": cfg.data.name,
        "channels": cfg.data.channels,
        "image_size": cfg.data.image_size,
        "n_classes": cfg.data.get("n_classes"),
        "model": cfg.model.name,
        # The data arguments, without `_target_`: ganforge-eval rebuilds the reference dataset
        # from its own conf/data/<name>.yaml and these values, never from a stored target.
        "data_args": {k: v for k, v in data_args.items() if k != "_target_"},
    }


def prepare_evaluation(callbacks: list[Any], datamodule: Any) -> None:
    """Build (or check) the FID Inception weights now, before iteration 1, when a periodic
    evaluation will need them, so a cold machine does not fail at the first evaluation after
    minutes of training. Only Inception metrics need them: 2-D mode coverage and Stacked MNIST's
    digit classifier do not (the registry says what each metric needs)."""
    for callback in callbacks:
        if isinstance(callback, PeriodicEvaluation) and INCEPTION in callback.evaluator.needs(
            datamodule
        ):
            ensure_weights(callback.evaluator.inception_weights)


def _check_resume(cfg: DictConfig, ckpt_path: str, system: GANSystem) -> dict[str, Any]:
    """The checkpoint's ganforge record, once the file is a readable ganforge checkpoint of the
    networks this run built and leaves iterations to train."""
    record = checkpoint.check_resume(ckpt_path, system.G, system.D)[checkpoint.RECORD_KEY]
    done = checkpoint.resume_state(record).iteration
    max_iters = cfg.system.max_iters
    if max_iters is not None and done >= max_iters:
        key = source_key(cfg, "system.max_iters")
        raise ConfigError(
            f"{key}={max_iters} but {ckpt_path} is already at iteration {done}: there is nothing "
            f"left to train; set {key} above {done} to continue it"
        )
    return record


def _remove_stale_tmp(callbacks: list[Any], ckpt_path: str | None) -> None:
    """A `*.ckpt.tmp` is a checkpoint write that was killed before its rename (the checkpoint it
    was replacing is intact): delete those left in this run's checkpoint folders and next to the
    checkpoint being resumed."""
    folders = {
        Path(c.dirpath)
        for c in callbacks
        if isinstance(c, CHECKPOINT_WRITERS) and c.dirpath is not None
    }
    if ckpt_path:
        folders.add(Path(ckpt_path).parent)
    for folder in sorted(folders):
        for stale in folder.glob("*.ckpt.tmp"):
            log.warning("removing %s, left by a checkpoint write that was interrupted", stale)
            stale.unlink(missing_ok=True)


def _wandb_run(name: str, cfg: DictConfig, node: DictConfig) -> dict[str, Any]:
    if not str(node.get("_target_", "")).endswith("WandbLogger"):
        return {}
    return loggers_.wandb_run(cfg, node)


def _resume_wandb(name: str, node: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """On resume, the W&B run id recorded in the checkpoint, unless logger.wandb.id is set."""
    if name != "wandb" or node.get("id"):
        return {}
    run_id = checkpoint.resume_state(record).wandb_run_id
    return {"id": run_id} if run_id else {}


def _resume_csv(node: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """On resume, the checkpoint's iteration: ganforge's CSV logger keeps the rows up to it when
    the run continues in its own directory (ganforge-reproduce's do; Lightning's deletes them)."""
    if not record or node.get("_target_") != "ganforge.loggers.CSVLogger":
        return {}
    return {"keep_until": checkpoint.resume_state(record).iteration}


def _auto_resume(cfg: DictConfig) -> str | None:
    """With resume=auto, the newest readable last.ckpt among this task's earlier runs, else None.
    A newest one that cannot be read (e.g. the disk filled up) is skipped with a warning."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    own = Path(cfg.paths.output_dir).resolve()
    found = [p for p in runs.glob("*/checkpoints/last.ckpt") if p.parent.parent.resolve() != own]
    # The classes this run builds may be the user's own (outside ganforge.models): their earlier
    # checkpoints are as readable as ganforge's.
    own_classes = [str(cfg.model.generator._target_), str(cfg.model.discriminator._target_)]
    for candidate in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        if checkpoint.is_readable(candidate, allowed_classes=own_classes):
            log.info("resume=auto: continuing %s", candidate)
            return str(candidate)
        log.warning("resume=auto: skipping %s, which cannot be read as a checkpoint", candidate)
    log.info("resume=auto: no readable %s/*/checkpoints/last.ckpt yet; starting fresh", runs)
    return None


def build(node: DictConfig, **kwargs: Any) -> Any:
    """`instantiate`, but a ganforge user error inside a constructor surfaces as itself.

    Hydra wraps constructor exceptions in InstantiationException, which would bury the message
    that names the config key behind a traceback.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, GanforgeError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@report_user_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    record_job(headline(metrics["summary"], cfg.get("objective")))
    return objective_value(cfg, metrics)


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a sweeper optimizes: metrics[cfg.objective], or None when no objective is set."""
    objective = cfg.get("objective")
    if not objective:
        return None
    if objective not in metrics:
        have = sorted(k for k in metrics if "/" in k)
        raise ConfigError(
            f"objective={objective} but the run produced no such metric (it has {have}); "
            "pick one of those, or for val/* metrics keep callbacks=eval with "
            "callbacks.evaluation.every_n_iters <= train.max_iters"
        )
    return float(metrics[objective])


def main() -> None:
    try:
        check_moved_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"ConfigError: {err}", file=sys.stderr)  # Hydra has not set up logging yet
        sys.exit(2)
    run_hydra_main(_hydra_main)


if __name__ == "__main__":
    main()
