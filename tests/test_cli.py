"""The console entry point as a user meets it: one clear message, no traceback, non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ganforge.train", f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss=nope"], "Could not find 'loss/nope'"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["data=nope"], "Could not find 'data/nope'"),
        (["data=mnist", "data.download=false"], "data.root"),
        (["data=image_folder", "data.image_size=48", "data.root=."], "data.image_size=48"),
        (["callbacks.checkpoint.every_n_iters=0"], "callbacks.checkpoint.every_n_iters=0 must"),
        (["callbacks.samples.every_n_iters=0"], "callbacks.samples.every_n_iters=0 must"),
        (["callbacks.evaluation.every_n_iters=-5"], "callbacks.evaluation.every_n_iters=-5 must"),
        (["callbacks.plots.n_snapshots=1"], "callbacks.plots.n_snapshots=1 must"),
    ],
    ids=[
        "loss",
        "model",
        "data",
        "missing-dataset",
        "image-size",
        "checkpoint-every",
        "samples-every",
        "evaluation-every",
        "plots-snapshots",
    ],
)
def test_user_errors_are_one_clear_message(tmp_path: Path, overrides, expected) -> None:
    if "data=image_folder" in overrides:
        from fakes import write_image_folder

        write_image_folder(tmp_path, 4)
    result = run_train(tmp_path, *overrides)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()  # failed before anything was trained


def test_progress_in_a_log_is_a_plain_line_every_five_percent(tmp_path: Path) -> None:
    """Not a terminal (a log file, a SLURM job): `iteration N/M` lines every ~5 % of the run,
    with it/s, time left and the losses, and no Lightning epoch bar."""
    result = run_train(
        tmp_path,
        "data=toy_ring",
        "model=mlp",
        "model.hidden=16",
        "callbacks=default",
        "logger=none",
        "train.max_iters=100",
        "train.log_every=1",
        "num_threads=1",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = [line for line in output.splitlines() if "] - iteration " in line]
    assert [line.split("] - iteration ")[1].split(" ")[0] for line in lines] == [
        f"{i}/100" for i in range(5, 101, 5)
    ]
    assert "(50%)" in lines[9] and "it/s" in lines[9] and "left" in lines[9]
    assert "d_loss" in lines[-1] and "g_loss" in lines[-1]
    assert "Epoch" not in output


def test_progress_line_and_interval() -> None:
    from ganforge.callbacks.progress import format_line, plain_interval

    assert plain_interval(2000, 10) == 100  # 5 % of the run, a multiple of log_every
    assert plain_interval(50, 10) == 10
    assert plain_interval(None, 10) == 100
    metrics = {"train/d_loss": 1.23456, "train/g_loss": 0.5, "val/fid": 87.654, "x": 1.0}
    assert format_line(1000, 2000, 4.0, metrics) == (
        "iteration 1000/2000 (50%) | 4 it/s, 4:10 left | d_loss 1.235 g_loss 0.5 | val/fid 87.65"
    )
    assert format_line(7, None, None, {}) == "iteration 7"


def test_progress_on_a_terminal_redraws_one_line() -> None:
    import io

    from conftest import quiet_trainer, toy_system
    from ganforge.callbacks.progress import IterationProgress

    stream = io.StringIO()
    system, dm = toy_system(max_iters=5)
    bar = IterationProgress(5, log_every=1, stream=stream, live=True)
    quiet_trainer(callbacks=[bar], enable_progress_bar=True).fit(system, datamodule=dm)
    text = stream.getvalue()
    assert text.startswith("\riteration 1/5 (20%)")
    assert "\riteration 5/5 (100%)" in text  # the final state, drawn at the end
    assert text.endswith("\x1b[K\n")  # each draw clears the line's tail; the end moves on
    assert text.count("\n") == 1  # one line, redrawn in place
