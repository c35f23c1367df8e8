"""Progress through a phase of batches: real or generated images through Inception, samples
drawn by ganforge-sample. Log lines, not a redrawn bar: they read the same on a terminal, in a log
file and in a batch job's output.

A phase that will take longer than `PROGRESS_AFTER_S` is announced with its cost and the setting
that shrinks it, then logs its count and the time left every tenth; every phase ends with one line
of its count and time. The first batch pays one-off costs (allocation, oneDNN's weight packing,
first-touch pages), so costs and times left are estimated from the batches after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from torch import Tensor

log = logging.getLogger("ganforge")

# A phase estimated to take longer than this is announced, then logs its progress.
PROGRESS_AFTER_S = 10.0


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def with_progress(
    batches: Iterator[Tensor],
    total: int,
    what: str,
    *,
    stage: str = "evaluation",
    fewer: str = "",
) -> Iterator[Tensor]:
    """`batches` (of `total` items along their first dimension), timed while the consumer works
    through them: each batch is measured up to the consumer's request for the next, so its own
    work (Inception's features) counts. `fewer` is the setting that makes the phase shorter,
    named when its cost is announced."""
    start = now = time.monotonic()
    done, mark = 0, 1
    first: tuple[float, int] | None = None  # (time, count) once the first batch is through
    announced = False
    for batch in batches:
        yield batch
        done += batch.shape[0]
        now = time.monotonic()
        elapsed, left = now - start, None
        if first is None:
            first = (now, done)
        elif done > first[1]:
            left = (now - first[0]) / (done - first[1]) * (total - done)
            if not announced and done < total and elapsed + left >= PROGRESS_AFTER_S:
                announced = True
                log.info(
                    "%s: %s %s, about %s here%s",
                    stage,
                    f"{total:,}",
                    what,
                    duration(elapsed + left),
                    f"; {fewer} to use fewer" if fewer else "",
                )
        if done * 10 >= mark * total:
            mark = done * 10 // total + 1
            if elapsed >= PROGRESS_AFTER_S and done < total:
                still = f", about {duration(left)} left" if left is not None else ""
                log.info("%s: %d/%d %s (%s%s)", stage, done, total, what, duration(elapsed), still)
    log.info("%s: %s %s in %s", stage, f"{done:,}", what, duration(now - start))
