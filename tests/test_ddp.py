"""DDP on CPU (gloo) through real processes: the ranks stay in sync, see different data and
noise, and together compute what one process computes on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_train
from ganforge.errors import ConfigError
from ganforge.train import train

SCRIPT = Path(__file__).with_name("ddp_dump.py")
# A tiny MLP without batch norm on the ring; 20 iterations cross an epoch boundary (16 per epoch).
COMMON = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "data.n_samples=256",
    "train.max_iters=20",
    "system.ema_decay=0.9",
    "logger=none",
    "num_threads=1",
]


def run_dump(out: Path, *overrides: str) -> list[dict]:
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), *COMMON, *overrides],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(p, weights_only=True) for p in sorted(out.glob("rank*.pt"))]


@pytest.mark.slow
def test_ddp_two_cpu_ranks_match_each_other_and_one_process(tmp_path: Path) -> None:
    ranks = run_dump(
        tmp_path / "ddp",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "data.batch_size=8",
    )
    (single,) = run_dump(tmp_path / "single", "trainer=cpu", "data.batch_size=16")
    assert len(ranks) == 2
    r0, r1 = ranks
    assert r0["iteration"] == r1["iteration"] == single["iteration"] == 20
    # Gradient sync: G, D (and so the EMA) are bit-identical across ranks.
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # Each rank has its own shard of the data and its own latents...
    assert not torch.equal(r0["x"], r1["x"])
    assert not torch.equal(r0["z"], r1["z"])
    # ...and together they are the single process's global batch and noise.
    both_x = torch.cat([r0["x"], r1["x"]])
    assert torch.equal(both_x.sort(dim=0).values, single["x"].sort(dim=0).values)
    assert torch.equal(torch.cat([r0["z"], r1["z"]]), single["z"])
    # So the trained weights agree with one process on the global batch (float sums differ).
    for key, value in single["state"].items():
        torch.testing.assert_close(r0["state"][key], value, rtol=0, atol=1e-5, msg=key)


def test_sync_batchnorm_on_cpu_is_one_clear_error(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"
    )
    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm=true needs GPUs"):
        train(cfg)
