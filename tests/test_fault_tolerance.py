"""Fault tolerance: a signal stops a run with a resumable checkpoint and resume=auto continues it
into the same run as an uninterrupted one; a kill during a checkpoint write never leaves an
unreadable last.ckpt; a non-finite loss stops the run (saying what the checkpoints hold) or is
skipped, a bounded number of times."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_train, quiet_trainer, toy_system
from ganforge import checkpoint
from ganforge.callbacks.checkpoint import IterationCheckpoint, describe_after_divergence
from ganforge.errors import NonFiniteLossError, NonFiniteWeightsError
from ganforge.nan_guard import NAN_REMEDIES
from ganforge.rng import get_rng_states, set_rng_states
from ganforge.train import train

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


def wait_for_rows(
    log_dir: Path, proc: subprocess.Popen, rows: int, timeout: float = 120, skip: set | None = None
) -> None:
    """Until the running job's metrics.csv has `rows` iterations logged: training is underway.
    `skip`: metrics files of earlier runs, not to be mistaken for the running job's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        for metrics_file in set(log_dir.glob("train/runs/*/csv/metrics.csv")) - (skip or set()):
            if len(metrics_file.read_text().splitlines()) > rows:
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
    resumed_ckpt = torch.load(lasts[-1], weights_only=True)
    assert resumed_ckpt["ganforge"]["iteration"] == stopped_at + 2

    # The interrupted-and-resumed run is the uninterrupted run of the same length, bit for bit.
    whole = launch(tmp_path / "whole", f"train.max_iters={stopped_at + 2}")
    out, _ = whole.communicate(timeout=120)
    assert whole.returncode == 0, out.decode()[-3000:]
    (whole_last,) = (tmp_path / "whole").glob("train/runs/*/checkpoints/last.ckpt")
    whole_ckpt = torch.load(whole_last, weights_only=True)
    assert whole_ckpt["state_dict"].keys() == resumed_ckpt["state_dict"].keys()
    for key, value in whole_ckpt["state_dict"].items():
        assert torch.equal(value, resumed_ckpt["state_dict"][key]), key
    assert torch.equal(whole_ckpt["ganforge"]["noise_rng"], resumed_ckpt["ganforge"]["noise_rng"])


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_always_leaves_a_loadable_last_ckpt(
    tmp_path: Path,
) -> None:
    """Killed (SIGKILL: no handler runs) at random moments of a run that writes a checkpoint
    every iteration, so most kills land inside a write: each time, last.ckpt loads as a
    checkpoint, and the next start (resume=auto) removes the killed write's leftover .tmp."""
    rng = __import__("random").Random(0)
    every_iter = ["callbacks.checkpoint.every_n_iters=1", "train.max_iters=1000000"]
    seen_iterations = []
    for _ in range(4):
        earlier = set(tmp_path.glob("train/runs/*/csv/metrics.csv"))
        proc = launch(tmp_path, "resume=auto", *every_iter)
        wait_for_rows(tmp_path, proc, rows=2, skip=earlier)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.communicate(timeout=60)
        newest = max(
            tmp_path.glob("train/runs/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        ckpt = checkpoint.load(newest)  # raises CheckpointError if half written
        seen_iterations.append(ckpt.iteration)
        time.sleep(1.1)  # the next run gets its own directory (named to the second)
    # Every restart continued the newest readable checkpoint: iterations only go forward.
    assert seen_iterations == sorted(seen_iterations) and seen_iterations[-1] > seen_iterations[0]
    # Leftovers of the last kill are removed by the next start, before it trains.
    newest_dir = max(
        tmp_path.glob("train/runs/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
    ).parent
    stale = newest_dir / "last.ckpt.tmp"
    stale.write_bytes(b"half a checkpoint")
    proc = launch(
        tmp_path,
        "resume=auto",
        "callbacks.checkpoint.every_n_iters=1",
        f"train.max_iters={seen_iterations[-1] + 1}",
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert not stale.exists()
    assert "left by a checkpoint write that was interrupted" in out.decode()


def nan_d_loss_at(system, call: int) -> None:
    """Make D's loss NaN once, at its `call`-th (1-based) evaluation."""
    real_loss = system.loss.discriminator
    calls = []

    def loss(real, fake):
        calls.append(1)
        value = real_loss(real, fake)
        return value * math.nan if len(calls) == call else value

    use_d_loss(system, loss)


def use_d_loss(system, d_loss) -> None:
    # A loss is a frozen record: the system gets a copy whose D function is `d_loss`.
    system.loss = dataclasses.replace(system.loss, discriminator=d_loss)


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
    assert system.nan_guard.skipped == 1
    assert system.last_metrics["train/skipped_updates"] == 1.0
    assert all(torch.isfinite(p).all() for p in system.parameters())


def nan_d_loss_always(system) -> None:
    real_loss = system.loss.discriminator
    use_d_loss(system, lambda real, fake: real_loss(real, fake) * math.nan)


def test_nan_policy_skip_stops_after_max_consecutive_skips() -> None:
    system, dm = toy_system(max_iters=50, nan_policy="skip", max_consecutive_skips=4)
    nan_d_loss_always(system)
    with pytest.raises(NonFiniteLossError, match=r"4 attempts in a row at iteration 1 "):
        quiet_trainer().fit(system, datamodule=dm)
    assert system.iteration == 0
    assert system.nan_guard.skipped == 4


def test_nan_policy_skip_stops_after_max_skips_in_all() -> None:
    """NaN at every other D update: never two in a row, but the total is bounded too."""
    system, dm = toy_system(max_iters=50, nan_policy="skip", max_skips=3)
    real_loss = system.loss.discriminator
    calls = []

    def loss(real, fake):
        calls.append(1)
        return real_loss(real, fake) * (math.nan if len(calls) % 2 == 0 else 1.0)

    use_d_loss(system, loss)
    with pytest.raises(NonFiniteLossError, match=r"3 times in all \(system.max_skips=3\)"):
        quiet_trainer().fit(system, datamodule=dm)
    assert system.nan_guard.skipped == 3
    assert system.iteration == 3  # D updates 1, 3, 5 completed iterations; 2, 4, 6 were NaN


def test_diverging_run_with_nan_policy_skip_ends_with_the_nan_error(tmp_path: Path) -> None:
    """The issue's repro: SGD at lr 1 on the ring with LSGAN diverges within a few iterations;
    with nan_policy=skip it used to retry iteration 2 forever, writing a CSV row per retry."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ganforge.train", f"hydra.run.dir={tmp_path}"]
    cmd += ["data=toy_ring", "model=mlp", "optim=sgd", "optim.lr_d=1", "optim.lr_g=1"]
    cmd += ["loss=lsgan", "system.nan_policy=skip", "train.max_iters=50"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "NonFiniteLossError" in out and "system.max_consecutive_skips=10" in out
    assert "Traceback" not in out
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [int(row["step"]) for row in rows]
    assert max(logged) < 50  # stopped early, at the divergence
    assert len(rows) < 50  # not a row per retry, forever


def test_nan_stop_says_when_last_ckpt_had_already_diverged(tmp_path: Path) -> None:
    system, dm = toy_system(max_iters=3)
    ckpt = IterationCheckpoint(str(tmp_path), every_n_iters=1, save_on_signal=False)
    quiet_trainer(callbacks=[ckpt]).fit(system, datamodule=dm)
    assert "holds the last good state" in describe_after_divergence(tmp_path)
    # Make last.ckpt what a diverging run saves: finite, but huge weights.
    raw = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for key, value in raw["state_dict"].items():
        if key.startswith("D.") and value.is_floating_point():
            raw["state_dict"][key] = value * 1e30
    torch.save(raw, tmp_path / "last.ckpt")
    message = describe_after_divergence(tmp_path)
    assert "(iteration 3) holds weights that are finite but diverged" in message
    assert f"newest checkpoint with sane weights is {tmp_path / 'iter_0000003.ckpt'}" in message


def test_resume_removes_a_stale_tmp_left_by_a_killed_write(tmp_path: Path) -> None:
    tiny = ["data=toy_ring", "model=mlp", "model.hidden=16", "debug=smoke", "logger=none"]
    train(compose_train(tmp_path / "a", *tiny))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    stale = last.with_name("last.ckpt.tmp")
    stale.write_bytes(last.read_bytes()[:1000])  # what a kill mid-write leaves
    metrics = train(compose_train(tmp_path / "b", *tiny, "train.max_iters=6", f"ckpt_path={last}"))
    assert metrics["train/iterations"] == 6
    assert not stale.exists()


def test_rng_states_restore_cpu_and_every_cuda_device() -> None:
    states = get_rng_states()
    assert ("cuda" in states) == torch.cuda.is_available()
    cpu = torch.rand(3)
    cuda = [torch.rand(3, device=f"cuda:{i}") for i in range(torch.cuda.device_count())]
    set_rng_states(states)
    assert torch.equal(torch.rand(3), cpu)
    for i, values in enumerate(cuda):
        assert torch.equal(torch.rand(3, device=f"cuda:{i}"), values)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only machine's path")
def test_rng_states_saved_on_a_gpu_machine_restore_on_a_cpu_one() -> None:
    states = get_rng_states()
    states["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as a GPU machine's checkpoint has
    cpu = torch.rand(3)
    set_rng_states(states)
    assert torch.equal(torch.rand(3), cpu)


def test_non_finite_weights_are_not_saved_and_the_message_gives_the_remedies(
    tmp_path: Path,
) -> None:
    system, _ = toy_system(max_iters=1)
    with torch.no_grad():
        next(system.parameters()).fill_(float("nan"))
    cb = IterationCheckpoint(str(tmp_path), every_n_iters=1)
    with pytest.raises(NonFiniteWeightsError) as raised:
        cb.save(None, system, tmp_path / "iter_0000001.ckpt")  # refuses before touching trainer
    assert isinstance(raised.value, FloatingPointError)
    assert str(raised.value) == (
        f"weights became non-finite at iteration 0; not saving them over {cb.last_path}. "
        f"{NAN_REMEDIES}"
    )
    assert list(tmp_path.iterdir()) == []
