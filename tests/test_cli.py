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
        from test_train import write_images

        write_images(tmp_path, 4)
    result = run_train(tmp_path, *overrides)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()  # failed before anything was trained
