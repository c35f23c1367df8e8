"""Plots at the end of a run, written to `plots/` and sent to every active logger:

* `losses.png` — `train/d_loss` and `train/g_loss` against GAN iterations;
* `d_outputs.png` — `train/d_real` and `train/d_fake`, D's mean probability (losses whose record
  says `probabilistic`), or `train/d_real_score` and `train/d_fake_score`, its raw mean score;
* `fid.png` / `modes.png` — `val/fid`, or the modes counted (the registry's mode-count keys: the
  toy data's `val/modes_captured`, Stacked MNIST's `val/modes`), when evaluated;
* `evolution.png` (2-D data) — generated points over the real modes at several moments of
  training, from one fixed noise batch, so the distribution can be seen moving.

The history is read from `pl_module.last_metrics`, the dict every logged value goes through,
after each iteration: it needs no particular logger (CSV, W&B, none) and sees evaluation metrics
as soon as they are logged. Plots are drawn in `on_fit_end`, after every `on_train_end` (the final
evaluation included) but before the loggers are closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from ganforge.callbacks.images import figure_image, save_and_log_image
from ganforge.callbacks.samples import draw_points, fixed_points
from ganforge.errors import check_int
from ganforge.metrics import registry
from ganforge.models.protocols import is_image

# D's mean outputs as GANSystem logs them: probabilities, or (a D whose output is no logit of
# one: hinge, WGAN, LSGAN, ...) raw scores.
D_PROBS = ("train/d_real", "train/d_fake")
D_SCORES = ("train/d_real_score", "train/d_fake_score")
CURVES = {  # file stem -> (title, y label, metric keys)
    "losses": ("Losses", "loss", ("train/d_loss", "train/g_loss")),
    "d_outputs": ("Discriminator outputs", "mean D(x), a probability", D_PROBS),
    "fid": ("FID (lower is better)", "FID", ("val/fid",)),
    "modes": ("Modes captured", "modes", tuple(registry.mode_count_keys())),
}


def curve_image(history: dict[str, list[tuple[int, float]]], title: str, ylabel: str) -> np.ndarray:
    """Each series against iterations; long noisy series get a moving average on top."""
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    for key, points in history.items():
        it, values = np.array(points, dtype=float).T
        line = ax.plot(it, values, lw=1, alpha=0.35 if len(it) > 20 else 1.0, marker=None)[0]
        if len(it) > 20:
            window = max(2, len(it) // 20)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(it[window - 1 :], smooth, lw=2, color=line.get_color(), label=key)
        else:
            line.set_label(key)
            line.set_marker("o")
    ax.set_xlabel("GAN iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_image(fig)


def evolution_image(
    snapshots: list[tuple[int, Tensor]], real: Tensor | None, modes: Tensor | None
) -> np.ndarray:
    """One scatter per snapshot, side by side on shared axes."""
    n = len(snapshots)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3 * cols, 3 * rows), dpi=100)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (it, fake) in zip(axes.flat, snapshots, strict=False):
        draw_points(ax, fake, real, modes, size=1)
        ax.set_title(f"iteration {it}", fontsize=9)
    fig.suptitle("generated (blue) over real data (grey) and modes (red)", fontsize=9)
    return figure_image(fig)


class TrainingPlots(L.Callback):
    def __init__(
        self, dirpath: str, n_snapshots: int = 8, n_points: int = 1000, ema: bool = True
    ) -> None:
        """
        Args:
            dirpath: where the PNGs go (`${paths.output_dir}/plots`).
            n_snapshots: 2-D data only: scatters in `evolution.png` — the start, then evenly
                spaced up to `train.max_iters` (or at powers of two when the run has no
                max_iters), and the end.
            n_points: generated points per snapshot (one fixed noise batch).
            ema: draw snapshots from the EMA generator when there is one.
        """
        check_int("callbacks.plots.n_snapshots", n_snapshots, minimum=2)
        check_int("callbacks.plots.n_points", n_points)
        self.dirpath, self.n_snapshots = Path(dirpath), n_snapshots
        self.n_points, self.ema = n_points, ema
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.snapshots: list[tuple[int, Tensor]] = []
        self._at: set[int] = set()
        self.paths: list[Path] = []

    # --- recording ---------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if is_image(pl_module.G):
            return
        max_iters = pl_module.max_iters
        if max_iters:
            start, n = pl_module.iteration, self.n_snapshots - 1
            self._at = {start + round(k * (max_iters - start) / n) for k in range(1, n + 1)}
        self._snapshot(trainer, pl_module)  # where G starts (or resumes)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Here, before the next iteration, every callback of the previous one (a periodic
        # evaluation included, whatever the callback order) has logged its values.
        self._record(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration
        if is_image(pl_module.G):
            return
        if (it in self._at) if self._at else (it & (it - 1)) == 0:  # else: powers of two
            self._snapshot(trainer, pl_module)

    def _record(self, pl_module: Any) -> None:
        for key, value in pl_module.last_metrics.items():
            series, value = self.history.setdefault(key, []), float(value)
            # Metrics are logged every few iterations: record each new value once.
            if not series or series[-1][1] != value:
                series.append((pl_module.iteration, value))

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not is_image(pl_module.G):
            self._snapshot(trainer, pl_module)  # the final state, if not taken already

    def _snapshot(self, trainer: L.Trainer, pl_module: Any) -> None:
        it = pl_module.iteration
        if self.snapshots and self.snapshots[-1][0] == it:
            return
        fake = fixed_points(pl_module, self.n_points, self.ema)
        self.snapshots.append((it, fake.float().cpu()))

    # --- drawing -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        self.render(trainer, pl_module)

    def render(self, trainer: L.Trainer, pl_module: Any) -> list[Path]:
        """Draw every plot there is data for; return the files written."""
        # A metric logged after the last iteration (the final evaluation) is in last_metrics
        # but not yet in the history.
        self._record(pl_module)
        step, self.paths = pl_module.iteration, []
        for stem, (title, ylabel, keys) in CURVES.items():
            series = {k: self.history[k] for k in keys if self.history.get(k)}
            if stem == "d_outputs" and not series:  # a loss whose D gives scores, not logits
                series = {k: self.history[k] for k in D_SCORES if self.history.get(k)}
                title, ylabel = "Discriminator scores", "mean D(x), a raw score"
            if series:
                self._save(curve_image(series, title, ylabel), stem, step, trainer)
        if len(self.snapshots) > 1:
            dm = trainer.datamodule
            real = dm.real_samples(self.n_points) if dm is not None else None
            snaps = _spread(self.snapshots, self.n_snapshots)
            self._save(evolution_image(snaps, real, getattr(dm, "modes", None)), "evolution",
                       step, trainer)  # fmt: skip
        return self.paths

    def _save(self, image: np.ndarray, stem: str, step: int, trainer: L.Trainer) -> None:
        path = self.dirpath / f"{stem}.png"
        self.paths.append(save_and_log_image(image, path, f"plots/{stem}", step, trainer.loggers))

    # The history goes into checkpoints, so a resumed run plots the whole run (primitives and
    # tensors only: the checkpoint still loads with weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
        self.snapshots = [tuple(s) for s in state_dict["snapshots"]]


def _spread(items: list[Any], n: int) -> list[Any]:
    """At most n items, evenly spread, always keeping the first and the last."""
    if len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]
