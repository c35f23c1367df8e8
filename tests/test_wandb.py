"""Weights & Biases in offline mode (no account, no network): the run directory holds the
resolved config, metrics and checkpoint artifact (in its .wandb records) and the sample images
(files/media); a resumed run continues the same W&B run. The mode follows W&B's convention: the
config's explicit `logger.wandb.mode`, else $WANDB_MODE, else online (which needs a login)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from ganforge.errors import ConfigError
from ganforge.preflight import check_loggers, wandb_mode
from ganforge.train import train

TINY = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "debug=smoke",
    "logger=wandb",  # mode null: $WANDB_MODE (offline in the test) decides
]


def run_records(run: Path, *needles: bytes, timeout_s: float = 60.0) -> bytes:
    """The run's .wandb records once they hold every needle. wandb's service process writes them
    asynchronously and can still be flushing after `finish()` returns on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        (records,) = run.glob("*.wandb")
        raw = records.read_bytes()
        if all(n in raw for n in needles) or time.monotonic() > deadline:
            return raw
        time.sleep(0.5)


def offline_runs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_offline_run_holds_config_metrics_images_and_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose_train(tmp_path / "a", *TINY, "seed=7", "logger.wandb.log_model=true"))
    (run,) = offline_runs(tmp_path / "a")
    run_id = run.name.rsplit("-", 1)[-1]
    images = list((run / "files" / "media" / "images").glob("samples_*.png"))
    assert images, "sample grids are logged as W&B images"
    raw = run_records(
        run, b"train/d_loss", b"train/g_loss", b"nan_policy", f"model-{run_id}".encode()
    )
    assert b"train/d_loss" in raw and b"train/g_loss" in raw
    assert f"model-{run_id}".encode() in raw  # last.ckpt as a model artifact (log_model)
    # The resolved config (offline, it lives in the run's records until `wandb sync`).
    assert b"toy_ring" in raw and b"nan_policy" in raw
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["ganforge"]["wandb_run_id"] == run_id

    train(compose_train(tmp_path / "b", *TINY, "train.max_iters=6", f"ckpt_path={ckpt}"))
    (resumed,) = offline_runs(tmp_path / "b")
    assert resumed.name.endswith(run_id)  # the same W&B run, continued


def test_wandb_mode_follows_the_config_then_wandb_mode_then_online(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(OmegaConf.create({"mode": None})) == "offline"
    assert wandb_mode(OmegaConf.create({"mode": "disabled"})) == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(OmegaConf.create({"mode": None})) == "online"


def test_online_wandb_without_a_login_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match=r"needs a W&B login.*wandb login.*mode=offline"):
        train(compose_train(tmp_path, *TINY))
    assert not (tmp_path / "checkpoints").exists()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # with a key, the check lets it through
    check_loggers(compose_train(tmp_path, *TINY))
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "offline")  # or offline, with no key
    check_loggers(compose_train(tmp_path, *TINY))
