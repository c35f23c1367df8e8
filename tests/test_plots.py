"""End-of-run plots: what is recorded, what is drawn, where it goes."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from conftest import compose_train, quiet_trainer, toy_system
from ganforge.callbacks import plots
from ganforge.callbacks.plots import TrainingPlots
from ganforge.train import train


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def blue_pixels(image: np.ndarray) -> int:
    """Pixels drawn in matplotlib's tab:blue-ish (generated points, first curve)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(((b - r > 60) & (b - g > 20)).sum())


class FakeEvaluation(L.Callback):
    """Logs val/fid every `every` iterations, *after* the plots callback has seen the batch."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.iteration % self.every == 0:
            pl_module.log_iteration_metrics({"val/fid": 100.0 / pl_module.iteration})


def test_history_follows_the_logged_values_and_every_plot_reaches_the_loggers(
    tmp_path: Path, monkeypatch
) -> None:
    sent: list[tuple[str, int, tuple]] = []
    real_save = plots.save_and_log_image

    def spy(image, path, key, step, loggers):
        sent.append((key, step, tuple(type(x).__name__ for x in loggers)))
        return real_save(image, path, key, step, loggers)

    monkeypatch.setattr(plots, "save_and_log_image", spy)
    system, dm = toy_system(log_every=2, max_iters=7)
    cb = TrainingPlots(str(tmp_path / "plots"), n_snapshots=3, n_points=200)
    logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = quiet_trainer(callbacks=[cb, FakeEvaluation(every=3)], logger=logger)
    trainer.fit(system, datamodule=dm)

    # Logged at iteration 1 and every 2nd: exactly what the CSV logger received.
    assert [it for it, _ in cb.history["train/d_loss"]] == [1, 2, 4, 6]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "csv" / "metrics.csv").read_text())))
    logged = [(int(r["step"]), float(r["train/d_loss"])) for r in rows if r["train/d_loss"]]
    assert cb.history["train/d_loss"] == logged  # floats written as repr: exact round trip
    # An evaluation logged after the plots callback's turn still lands on its own iteration.
    assert cb.history["val/fid"] == [(3, 100 / 3), (6, 100 / 6)]
    # 2-D data: snapshots at the start, half way and the end (n_snapshots=3 over 7 iterations).
    assert [it for it, _ in cb.snapshots] == [0, 4, 7]
    assert all(s.shape == (200, 2) for _, s in cb.snapshots)

    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["d_outputs.png", "evolution.png", "fid.png", "losses.png"]
    assert sorted(key for key, _, _ in sent) == [f"plots/{p[:-4]}" for p in names]
    assert all(step == 7 and loggers == ("CSVLogger",) for _, step, loggers in sent)
    for name in names:
        assert blue_pixels(png(tmp_path / "plots" / name)) > 50, name  # something was drawn


def test_d_outputs_are_probabilities_only_where_the_loss_says_so(tmp_path: Path) -> None:
    """Hinge's D gives raw scores: logged and plotted as *_score, never under the probability
    names; the default loss's D gives logits of probabilities: train/d_real, in [0, 1]."""
    from ganforge.callbacks.progress import format_line
    from ganforge.losses import GANLoss

    for name, real, fake, other in [
        ("hinge", "train/d_real_score", "train/d_fake_score", "train/d_real"),
        ("non_saturating", "train/d_real", "train/d_fake", "train/d_real_score"),
    ]:
        system, dm = toy_system(loss=GANLoss(name), max_iters=3)
        cb = TrainingPlots(str(tmp_path / name), n_snapshots=2, n_points=50)
        quiet_trainer(callbacks=[cb]).fit(system, datamodule=dm)
        logged = {k for k in cb.history if k.startswith("train/d_") and "loss" not in k}
        assert {real, fake} <= logged and other not in logged
        assert (tmp_path / name / "d_outputs.png").is_file()
        line = format_line(3, 3, None, system.last_metrics)
        assert f" {real.removeprefix('train/')} " in line
        if name == "non_saturating":
            assert all(0 <= v <= 1 for _, v in cb.history[real])


def test_default_run_writes_plots_under_the_run_dir(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, "debug=smoke", "data=toy_ring", "model=mlp", "model.hidden=16", "model.depth=1"
    )
    train(cfg)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    # No evaluation: no fid.png. health.png is the health monitor's timeline (on by default).
    assert names == ["d_outputs.png", "evolution.png", "health.png", "losses.png"]
    evolution = png(tmp_path / "plots" / "evolution.png")
    assert evolution.shape[1] > evolution.shape[0]  # snapshots side by side


def test_image_data_has_curves_but_no_evolution_panel(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "debug=smoke", "model=mlp", "model.hidden=16", "model.depth=1")
    train(cfg)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["d_outputs.png", "health.png", "losses.png"]  # health: the monitor's timeline


def test_fast_dev_run_writes_no_plots(tmp_path: Path) -> None:
    train(compose_train(tmp_path, "debug=fast_dev_run", "data=toy_ring", "model=mlp"))
    assert not (tmp_path / "plots").exists()


def test_history_survives_a_checkpoint_round_trip() -> None:
    cb = TrainingPlots("unused")
    cb.history = {"train/d_loss": [(1, 0.5), (10, 0.25)]}
    cb.snapshots = [(0, torch.zeros(3, 2)), (10, torch.ones(3, 2))]
    buffer = io.BytesIO()
    torch.save(cb.state_dict(), buffer)
    buffer.seek(0)
    restored = TrainingPlots("unused")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.history == cb.history
    assert [it for it, _ in restored.snapshots] == [0, 10]
    assert torch.equal(restored.snapshots[1][1], torch.ones(3, 2))


def test_too_few_snapshots_is_refused() -> None:
    with pytest.raises(ValueError, match="n_snapshots"):
        TrainingPlots("unused", n_snapshots=1)


def test_rendering_leaves_the_matplotlib_backend_alone() -> None:
    # A notebook that trains must keep its inline backend: no callback may call matplotlib.use
    # (checked in a fresh process, where the modules are imported for the first time).
    code = """
import matplotlib
matplotlib.use("svg")
import torch
from ganforge.callbacks.plots import curve_image, evolution_image
from ganforge.callbacks.samples import scatter_image
scatter_image(torch.zeros(5, 2), None, None, "t")
curve_image({"train/d_loss": [(1, 0.5), (2, 0.4)]}, "t", "y")
evolution_image([(0, torch.zeros(5, 2)), (1, torch.ones(5, 2))], None, None)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
