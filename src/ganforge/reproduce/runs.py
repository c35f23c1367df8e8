"""The runs: one `ganforge-train` process per (variant, seed) in a stable directory, resumed from
its newest readable checkpoint, skipped when finished, or continued from the checkpoint
`extend.plan_extension` chose; `jobs` of them at a time."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ganforge import checkpoint
from ganforge.errors import CheckpointError, GanforgeError
from ganforge.reproduce.evaluate import evaluate_run
from ganforge.reproduce.options import Options
from ganforge.reproduce.processes import Children, Stopped, claim, note_child, release
from ganforge.reproduce.variants import Variant

log = logging.getLogger("ganforge")

RESULT_FILE = "reproduce_result.json"


@dataclass
class SeedRun:
    variant: Variant
    seed: int
    run_dir: Path
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extend_from: Path | None = None  # extend=true: the shorter run's checkpoint to continue
    # (ganforge.reproduce.extend)


def run_all(
    opts: Options,
    jobs: list[SeedRun],
    iterations: dict[str, int],
    threads: int,
    protocols: dict[str, dict[str, Any] | None],
    children: Children,
) -> None:
    """Run every job, `opts.jobs` at a time, each in its run directory claimed first (one in use
    is refused before anything trains). Whatever ends this early (an exception, or a signal
    raised as one, see `ganforge.reproduce.main`) stops the training processes first."""
    locks: list[Path] = []
    pool = ThreadPoolExecutor(max_workers=opts.jobs)
    try:
        for job in jobs:  # a run directory in use: refused here, the claims made so far let go
            locks.append(claim(job.run_dir))
        futures = [
            pool.submit(run_seed, opts, job, iterations[job.variant.name], threads,
                        protocols[job.variant.name], children, lock)
            for job, lock in zip(jobs, locks, strict=True)
        ]  # fmt: skip
        for future in futures:
            future.result()
    except BaseException as err:
        # A signal (Stopped), Ctrl-C in a library call, or a bug: no training outlives us.
        stopped = children.stop()
        if stopped and not isinstance(err, Stopped):  # a signal's line is main's
            log.error("%s: stopped %d training process(es) and waited for them",
                      type(err).__name__, stopped)  # fmt: skip
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for lock in locks:
            release(lock)


def run_dir(opts: Options, variant: Variant, iterations: int, seed: int) -> Path:
    return opts.out / opts.experiment / variant.name / f"iters_{iterations}" / f"seed_{seed}"


def resume_point(folder: Path) -> Path | None:
    """The newest readable checkpoint of an interrupted run (a kill can leave last.ckpt cut
    short; an iter_*.ckpt then still holds an earlier state), or None."""
    newest = newest_checkpoint(folder)
    return newest[1] if newest else None


def newest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """(iteration, path) of `folder`'s newest readable checkpoint, or None."""
    ckpts = folder / "checkpoints"
    best: tuple[int, Path] | None = None
    for path in [ckpts / "last.ckpt", *sorted(ckpts.glob("iter_*.ckpt"), reverse=True)]:
        if not path.is_file():
            continue
        try:
            iteration = checkpoint.load(path).iteration
        except CheckpointError:
            continue
        if best is None or iteration > best[0]:
            best = (iteration, path)
    return best


def train_command(
    opts: Options,
    variant: Variant,
    iterations: int,
    seed: int,
    folder: Path,
    threads: int,
    start: Path | None,
) -> list[str]:
    every = OmegaConf.select(variant.cfg, "callbacks.checkpoint") or {}
    # A checkpoint at least every tenth of the run, so an interrupted run loses little.
    ckpt_every = max(1, min(int(every.get("every_n_iters") or iterations), iterations // 10 or 1))
    command = [
        sys.executable,
        "-m",
        "ganforge.train",
        f"experiment={opts.experiment}",
        *variant.overrides,
        *opts.overrides,
        f"seed={seed}",
        f"train.max_iters={iterations}",
        f"num_threads={threads}",
        f"hydra.run.dir={folder}",
        # The console only: its output goes to train.log, which Hydra's file handler would
        # otherwise write as well (every line twice).
        "hydra.job_logging.root.handlers=[console]",
        "trainer.enable_model_summary=false",
    ]
    if every:
        command.append(f"callbacks.checkpoint.every_n_iters={ckpt_every}")
    if start is not None:
        command.append(f"ckpt_path={start}")
    return command


def run_seed(
    opts: Options,
    job: SeedRun,
    iterations: int,
    threads: int,
    protocol: dict[str, Any] | None,
    children: Children,
    lock: Path,
) -> SeedRun:
    done = job.run_dir / RESULT_FILE
    if done.is_file():
        job.result = json.loads(done.read_text())
        log.info("%s seed %d: done earlier (%s)", job.variant.name, job.seed, done)
        return job
    job.run_dir.mkdir(parents=True, exist_ok=True)
    start = resume_point(job.run_dir)
    resumed = start is not None
    # Where an extended run began, kept beside it so that a resumed one still says so.
    marker = job.run_dir / "extended_from.txt"
    extended_from = Path(marker.read_text().strip()) if marker.is_file() else None
    if start is None and job.extend_from is not None:
        start = extended_from = job.extend_from
        marker.write_text(f"{start}\n")
    command = train_command(opts, job.variant, iterations, job.seed, job.run_dir, threads, start)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    if resumed and checkpoint.is_readable(last) and checkpoint.load(last).iteration >= iterations:
        # Trained to the end but not evaluated (stopped in between): evaluate only.
        command = []
    doing = "resuming" if resumed else "training"
    if extended_from is not None and not resumed:
        doing = f"continuing {extended_from} to"
    log.info("%s seed %d: %s %d iterations in %s", job.variant.name, job.seed, doing, iterations,
             job.run_dir)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.monotonic()
    code = 0
    if command:
        with open(job.run_dir / "train.log", "a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            code = children.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                on_start=lambda pid: note_child(lock, pid),
            )
    wall = time.monotonic() - started
    if children.stopping:
        job.error = "stopped with the harness; run the same command again to resume"
        return job
    if code != 0:
        tail = (job.run_dir / "train.log").read_text().strip().splitlines()[-1:] or [""]
        job.error = (
            f"ganforge-train exited with {code} ({tail[0][:200]}); see {job.run_dir}/train.log"
        )
        return job
    if checkpoint.is_readable(last) and (reached := checkpoint.load(last).iteration) < iterations:
        # A clean stop on a signal sent to the training process alone: not a finished run.
        job.error = (
            f"ganforge-train stopped at iteration {reached} of {iterations} (a signal?); run the "
            f"same command again to resume; see {job.run_dir}/train.log"
        )
        return job
    try:
        metrics, samples, note = evaluate_run(job.run_dir, protocol)
    except GanforgeError as err:
        job.error = f"evaluation failed: {err}"
        return job
    job.result = {
        "seed": job.seed,
        "iterations": iterations,
        "metrics": metrics,
        "n_samples": samples,
        "note": note,
        "wall_s_last_invocation": round(wall, 1),
        "resumed": resumed,
        "extended_from": str(extended_from) if extended_from else None,
        "threads": threads,
    }
    done.write_text(json.dumps(job.result, indent=2))
    return job
