"""Console progress in GAN iterations: `iteration 1000/2000`, it/s, time left, the train losses
and the last `val/*` — instead of Lightning's epoch bar (`Epoch 12/-2` means nothing when the run
length is counted in iterations).

On a terminal one line is redrawn in place about twice a second. Anywhere else (a log file, a
SLURM job, `| tee`) a plain log line every `interval` iterations (about 5 % of the run, a
multiple of `train.log_every`, so the losses shown are the ones just logged), so a tailed log shows
the run moving without flooding it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Protocol, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

log = logging.getLogger("ganforge")

# The line on_train_end logs; ganforge-report's it/s is the sum of these in a run's train.log.
TRAINED_RE = re.compile(r"training: (\d+) iterations in ([0-9.]+) s, ")
# Redraws of the live line per second at most: each costs a format and a write.
REFRESH_S = 0.5
# The plain log's lines per run (about every 5 %).
LINES_PER_RUN = 20
# Train metrics worth a glance on one line, in this order (others stay in the logs).
# d_real/d_fake are probabilities; d_real_score/d_fake_score a non-probabilistic D's raw scores.
TRAIN_KEYS = (
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "d_real_score",
    "d_fake_score",
    "skipped_updates",
)


class Iterating(Protocol):
    """What progress reads from the LightningModule (GANSystem has both)."""

    iteration: int
    last_metrics: dict[str, float]


def plain_interval(max_iters: int | None, log_every: int) -> int:
    """Iterations between plain log lines: ~5 % of the run, rounded to a multiple of log_every."""
    if max_iters is None:
        return 10 * log_every
    return log_every * max(1, round(max_iters / LINES_PER_RUN / log_every))


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_line(
    iteration: int, max_iters: int | None, rate: float | None, metrics: dict[str, float]
) -> str:
    """`iteration 1000/2000 (50%) | 4.1 it/s, 4:03 left | d_loss 1.23 g_loss 0.98 | val/fid 12.3`"""
    if max_iters:
        parts = [f"iteration {iteration}/{max_iters} ({100 * iteration // max_iters}%)"]
    else:
        parts = [f"iteration {iteration}"]
    if rate:
        speed = f"{rate:.3g} it/s"
        if max_iters and iteration < max_iters:
            speed += f", {format_duration((max_iters - iteration) / rate)} left"
        parts.append(speed)
    train = [f"{k} {metrics[f'train/{k}']:.4g}" for k in TRAIN_KEYS if f"train/{k}" in metrics]
    if train:
        parts.append(" ".join(train))
    val = [f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/")]
    if val:
        parts.append(" ".join(val))
    return " | ".join(parts)


class IterationProgress(ProgressBar):
    """Lightning's progress-bar slot, filled with iteration progress (see the module docstring).

    Only rank 0 reports. The per-iteration cost is one integer test (plain) or one clock read
    (terminal); formatting happens only when a line is shown.
    """

    def __init__(
        self,
        max_iters: int | None,
        log_every: int = 10,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        super().__init__()
        self.max_iters = max_iters
        self.interval = plain_interval(max_iters, log_every)
        self.stream = stream if stream is not None else sys.stdout
        # A terminal gets the redrawn line; a file or pipe gets plain log lines.
        self.live = self.stream.isatty() if live is None else live
        self._enabled = True
        self._drawn = False
        # (iteration, time) of the last rate sample; None until the first iteration has ended,
        # so loader start-up and the first step's one-off costs do not skew the rate.
        self._mark: tuple[int, float] | None = None
        self._start_iteration = 0
        self._rate: float | None = None
        self._next_draw = 0.0
        self._t0 = self._t_last = time.monotonic()

    # Lightning switches the bar off around other output (e.g. in notebooks): honour it.
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Resumed runs start counting at the checkpoint's iteration; the rate is this process's.
        self._start_iteration = pl_module.iteration
        self._mark, self._rate = None, None
        self._t0 = self._t_last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._t_last = time.monotonic()  # the training time ends with the last iteration
        if not (self._enabled and trainer.is_global_zero):
            return
        it = pl_module.iteration
        if self.live:
            now = time.monotonic()
            if now >= self._next_draw:
                self._next_draw = now + REFRESH_S
                self._update_rate(it, now)
                self._draw(pl_module)
        elif it % self.interval == 0 or self._mark is None:
            self._update_rate(it, time.monotonic())
            if it % self.interval == 0:
                log.info(self._line(pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        trained, seconds = pl_module.iteration - self._start_iteration, self._t_last - self._t0
        if trained > 0 and seconds > 0:
            # train.log's record of the speed (ganforge-report reads it: TRAINED_RE); the
            # milliseconds keep a short run's time from reading as 0.
            log.info(
                "training: %d iterations in %.3f s, %.3g it/s (setup and the final evaluation "
                "not counted)",
                trained,
                seconds,
                trained / seconds,
            )
        if not self._enabled:
            return
        if self.live:
            self._draw(pl_module)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
        elif pl_module.iteration % self.interval and pl_module.iteration > self._start_iteration:
            # The last iteration, unless its line was just logged.
            self._update_rate(pl_module.iteration, time.monotonic())
            log.info(self._line(pl_module))

    def _update_rate(self, it: int, now: float) -> None:
        if self._mark is None:
            self._mark = (it, now)
            return
        last_it, last_t = self._mark
        if it > last_it and now > last_t:
            recent = (it - last_it) / (now - last_t)
            # Smoothed, so the time left does not jump with every evaluation pause.
            self._rate = recent if self._rate is None else 0.7 * self._rate + 0.3 * recent
        self._mark = (it, now)

    def _line(self, pl_module: Iterating) -> str:
        return format_line(pl_module.iteration, self.max_iters, self._rate, pl_module.last_metrics)

    def _draw(self, pl_module: Iterating) -> None:
        # "\r" + clear to the end of the line: a shorter line leaves no tail of the previous one.
        self.stream.write("\r" + self._line(pl_module) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        # Lightning's `trainer.print`-style messages go on their own line, below the live one.
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(sep.join(map(str, args)) + "\n")
