"""Sweeps: a Hydra multirun runs every job in its own directory, and `train` hands the configured
objective to sweepers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import compose_train
from ganforge.errors import ConfigError
from ganforge.train import objective_value, train

TINY = ["data=toy_ring", "model=mlp", "model.hidden=16", "model.depth=2", "debug=smoke"]


def run_cli(log_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_LOG_DIR": str(log_dir)}
    cmd = [sys.executable, "-m", "ganforge.train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.mark.slow
def test_multirun_runs_each_job_in_its_own_directory(tmp_path: Path) -> None:
    run_cli(tmp_path, "-m", "loss=non_saturating,hinge", "seed=1,2", *TINY)
    jobs = sorted(tmp_path.glob("train/multiruns/*/*/config_resolved.yaml"))
    assert [p.parent.name for p in jobs] == ["0", "1", "2", "3"]
    combos = set()
    for job in jobs:
        cfg = yaml.safe_load(job.read_text())
        combos.add((cfg["loss"]["name"], cfg["seed"]))
        assert (job.parent / "checkpoints" / "last.ckpt").is_file()
        assert (job.parent / "csv" / "metrics.csv").is_file()
    assert combos == {("non_saturating", 1), ("non_saturating", 2), ("hinge", 1), ("hinge", 2)}


def test_train_returns_the_configured_objective(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, *TINY, "logger=none", "objective=train/g_loss")
    metrics = train(cfg)
    assert objective_value(cfg, metrics) == metrics["train/g_loss"]
    cfg.objective = "val/fid"
    with pytest.raises(ConfigError, match=r"objective=val/fid but the run produced no such"):
        objective_value(cfg, metrics)
    cfg.objective = None
    assert objective_value(cfg, metrics) is None


OPTUNA_TINY = [
    "model.hidden=16",
    "model.depth=2",
    "train.max_iters=4",
    "train.log_every=2",
    "callbacks.samples.every_n_iters=1000",
    "callbacks.evaluation.evaluator.n_samples=100",
    "logger=none",
    "num_threads=1",
]


@pytest.mark.slow
def test_optuna_preset_runs_two_trials_and_reports_the_objective(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the optuna extra")
    optuna = pytest.importorskip("optuna")
    db = tmp_path / "study.db"
    args = ["hparams_search=toy_ring_optuna", "hydra.sweeper.n_trials=2", *OPTUNA_TINY]
    run_cli(tmp_path, *args, f"hydra.sweeper.storage=sqlite:///{db}")
    study = optuna.load_study(study_name="toy_ring", storage=f"sqlite:///{db}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    assert all(t.value is not None and t.value >= 0 for t in trials)  # val/reverse_kl
    (results,) = tmp_path.glob("train/multiruns/*/optimization_results.yaml")
    assert "best_value" in results.read_text()


@pytest.mark.slow
def test_joblib_launcher_preset_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the joblib extra")
    run_cli(tmp_path, "-m", "hydra/launcher=joblib", "seed=1,2", *TINY, "num_threads=1")
    jobs = sorted(tmp_path.glob("train/multiruns/*/*/checkpoints/last.ckpt"))
    assert len(jobs) == 2


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job_and_slurm_preset_composes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    run_cli(tmp_path, "-m", "hydra/launcher=submitit_local", "seed=1", *TINY, "num_threads=1")
    assert len(list(tmp_path.glob("train/multiruns/*/0/checkpoints/last.ckpt"))) == 1
    # No SLURM here: check that the preset resolves to submitit's SLURM launcher.
    shown = run_cli(tmp_path, "hydra/launcher=slurm", "--cfg", "hydra").stdout
    assert "submitit_launcher.SlurmLauncher" in shown and "timeout_min: 720" in shown
