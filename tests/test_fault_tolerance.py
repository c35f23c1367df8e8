"""Fault tolerance: a signal stops a run with a resumable checkpoint, resume=auto picks it up,
and a non-finite loss either stops the run (weights and last.ckpt stay good) or is skipped."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import quiet_trainer, toy_system
from ganforge.callbacks.checkpoint import IterationCheckpoint
from ganforge.errors import NonFiniteLossError

TINY = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "data.batch_size=32",
    "callbacks=default",
    "train.log_every=1",
    "num_threads=1",
    "hydra.job_logging.root.level=INFO",
]


def launch(log_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_LOG_DIR": str(log_dir)}
    cmd = [sys.executable, "-m", "ganforge.train", *TINY, *overrides]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_rows(log_dir: Path, proc: subprocess.Popen, rows: int, timeout: float = 120) -> None:
    """Until the running job's metrics.csv has `rows` iterations logged: training is underway."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        for csv in log_dir.glob("train/runs/*/csv/metrics.csv"):
            if len(csv.read_text().splitlines()) > rows:
                return
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the training job logged no iterations in time")


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_signal_saves_resumable_checkpoint_and_resume_auto_continues(
    tmp_path: Path, signame: str
) -> None:
    proc = launch(tmp_path, "train.max_iters=1000000")
    wait_for_rows(tmp_path, proc, rows=3)
    proc.send_signal(getattr(signal, signame))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert f"{signame} received" in out.decode()
    (last,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    assert not list(last.parent.glob("*.tmp"))  # written atomically
    stopped_at = torch.load(last, weights_only=True)["ganforge"]["iteration"]
    assert 3 <= stopped_at < 1000000
    if signame == "SIGUSR1":
        return
    time.sleep(1.1)  # a new run directory (runs are named to the second)
    resumed = launch(tmp_path, "resume=auto", f"train.max_iters={stopped_at + 2}")
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out.decode()[-3000:]
    assert f"resume=auto: continuing {last}" in out.decode()
    lasts = sorted(tmp_path.glob("train/runs/*/checkpoints/last.ckpt"))
    assert len(lasts) == 2
    assert torch.load(lasts[-1], weights_only=True)["ganforge"]["iteration"] == stopped_at + 2


def nan_d_loss_at(system, call: int) -> None:
    """Make D's loss NaN once, at its `call`-th (1-based) evaluation."""
    real_loss = system.loss.discriminator
    calls = []

    def loss(real, fake):
        calls.append(1)
        value = real_loss(real, fake)
        return value * math.nan if len(calls) == call else value

    system.loss.discriminator = loss


def test_non_finite_loss_stops_naming_iteration_and_keeps_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    system, dm = toy_system(max_iters=10)
    nan_d_loss_at(system, 4)
    ckpt = IterationCheckpoint(str(tmp_path), every_n_iters=2, save_on_signal=False)
    with pytest.raises(NonFiniteLossError, match=r"train/d_loss became nan in iteration 4"):
        quiet_trainer(callbacks=[ckpt]).fit(system, datamodule=dm)
    assert system.iteration == 3
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["ganforge"]["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in system.parameters())


def test_non_finite_loss_is_skipped_with_nan_policy_skip() -> None:
    system, dm = toy_system(max_iters=6, nan_policy="skip")
    nan_d_loss_at(system, 3)
    quiet_trainer().fit(system, datamodule=dm)
    assert system.iteration == 6
    assert system.skipped_updates == 1
    assert system.last_metrics["train/skipped_updates"] == 1.0
    assert all(torch.isfinite(p).all() for p in system.parameters())
