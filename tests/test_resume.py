"""Exact resume: N iterations + resume from last.ckpt + N iterations is bit for bit the same run
as 2N uninterrupted iterations (weights, EMA, optimizer state, counters, every RNG stream, data
order)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_train
from ganforge.train import train

# 8 batches per epoch, so the resume at 5 is mid-epoch and the run crosses an epoch boundary;
# D's dropout draws from the global torch RNG, so that stream must be restored too.
TINY = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "model.dropout=0.2",
    "data.n_samples=256",
    "data.batch_size=32",
    "system.ema_decay=0.9",
    "logger=none",
    "callbacks=default",
    "callbacks.samples.every_n_iters=1000",
]


@pytest.mark.parametrize("g_steps", [1, 2], ids=["g_steps=1", "g_steps=2"])
def test_resume_is_bit_exact(tmp_path: Path, g_steps: int) -> None:
    """Also with system.g_steps=2 (VEEGAN's code): each iteration then takes two G steps, each
    on fresh z from the checkpointed noise stream."""
    tiny = [*TINY, f"system.g_steps={g_steps}"]
    train(compose_train(tmp_path / "whole", *tiny, "train.max_iters=12"))
    train(compose_train(tmp_path / "half", *tiny, "train.max_iters=5"))
    first = tmp_path / "half" / "checkpoints" / "last.ckpt"
    metrics = train(
        compose_train(tmp_path / "resumed", *tiny, "train.max_iters=12", f"ckpt_path={first}")
    )
    assert metrics["train/iterations"] == 12

    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    # The optimizers' own step counts (G's optimizer is the first): g_steps G updates and one D
    # update per iteration, in the straight run and across the resume alike.
    for ckpt in (whole, resumed):
        g_state, d_state = (opt["state"][0] for opt in ckpt["optimizer_states"])
        assert int(g_state["step"]) == 12 * g_steps
        assert int(d_state["step"]) == 12
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for opt_whole, opt_resumed in zip(
        whole["optimizer_states"], resumed["optimizer_states"], strict=True
    ):
        for i, state in opt_whole["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_resumed["state"][i][name]), (i, name)
    a, b = whole["ganforge"], resumed["ganforge"]
    assert a["iteration"] == b["iteration"] == 12
    assert torch.equal(a["noise_rng"], b["noise_rng"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"])
    assert a["rng"]["python"] == b["rng"]["python"]


def test_resume_auto_skips_an_unreadable_newest_last_ckpt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A newest last.ckpt that cannot be read (a disk that filled up, a copy cut short) is
    skipped with a warning, and the newest readable one is continued."""
    logs = tmp_path / "logs"
    runs = logs / "train" / "runs"
    tiny = [*TINY, f"paths.log_dir={logs}", "train.max_iters=5"]
    train(compose_train(runs / "2000-01-01_00-00-00", *tiny))
    good = runs / "2000-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    broken = runs / "2000-01-02_00-00-00" / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(good.read_bytes()[:4096])
    later = time.time() + 10
    os.utime(broken, (later, later))  # the newest by modification time
    with caplog.at_level(logging.INFO, logger="ganforge"):
        metrics = train(
            compose_train(
                runs / "2000-01-03_00-00-00", *tiny[:-1], "train.max_iters=7", "resume=auto"
            )
        )
    assert f"resume=auto: skipping {broken}" in caplog.text
    assert f"resume=auto: continuing {good}" in caplog.text
    assert metrics["train/iterations"] == 7


def test_a_run_resumed_in_its_own_directory_keeps_its_metrics(tmp_path: Path) -> None:
    """ganforge-reproduce resumes a killed run in the run's own directory, where Lightning's CSV
    logger deleted csv/metrics.csv: the curves before the kill were lost. Now the rows up to the
    checkpoint stay, the ones after it (and a row cut off by the kill) go, and the resumed run logs
    those iterations again: the file equals a straight run's."""
    tiny = [o for o in TINY if o != "logger=none"]
    tiny += ["logger=csv", "train.log_every=1", "callbacks.checkpoint.every_n_iters=5"]
    train(compose_train(tmp_path / "whole", *tiny, "train.max_iters=12"))
    run = tmp_path / "killed"
    train(compose_train(run, *tiny, "train.max_iters=8"))
    rows = run / "csv" / "metrics.csv"
    with open(rows, "a") as f:
        f.write("0.5,0.2")  # a row the kill cut off
    at_5 = run / "checkpoints" / "iter_0000005.ckpt"
    train(compose_train(run, *tiny, "train.max_iters=12", f"ckpt_path={at_5}"))
    straight = (tmp_path / "whole" / "csv" / "metrics.csv").read_text()
    assert rows.read_text() == straight
    assert "\n12," in straight or ",12," in straight  # the file holds the whole run
