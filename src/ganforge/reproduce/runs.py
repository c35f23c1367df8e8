"""The runs: one `ganforge-train` process per (variant, seed) in a stable directory, resumed from
its newest readable checkpoint, skipped when finished, or (extend=true) continued from the same
variant and seed's longest shorter run; `jobs` of them at a time."""

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
from ganforge.compile import check_mode
from ganforge.errors import CheckpointError, ConfigError, GanforgeError
from ganforge.report.table import flat
from ganforge.reproduce.evaluate import evaluate_run
from ganforge.reproduce.options import Options
from ganforge.reproduce.processes import Children, claim, note_child, release
from ganforge.reproduce.variants import Variant
from ganforge.schedules import tied_to_run_length

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
        if stopped := children.stop():
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
    newest = _newest_checkpoint(folder)
    return newest[1] if newest else None


def _newest_checkpoint(folder: Path) -> tuple[int, Path] | None:
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


def shorter_run_point(opts: Options, variant: Variant, iterations: int, seed: int) -> Path | None:
    """For extend=true: the newest readable checkpoint of this variant and seed's longest run
    shorter than `iterations` (under the same `out`), or None."""
    found: list[tuple[int, Path]] = []
    for folder in (opts.out / opts.experiment / variant.name).glob(f"iters_*/seed_{seed}"):
        length = folder.parent.name.removeprefix("iters_")
        if length.isdigit() and int(length) < iterations:
            newest = _newest_checkpoint(folder)
            found += [newest] if newest else []
    return max(found)[1] if found else None


def check_extendable(variants: list[Variant], opts: Options) -> None:
    """A continued run equals a longer one only when nothing in it depends on the run's length:
    a schedule that ends at train.max_iters (schedules.tied_to_run_length: optim.decay=linear,
    and cosine, beta2_to, penalty_to or ema_half_life without a stated span) took other steps in
    the shorter run."""
    for v in variants:
        tied = tied_to_run_length(v.cfg.system)
        if tied:
            raise ConfigError(
                f"extend=true continues shorter runs, which equals a longer run only when no "
                f"schedule depends on train.max_iters; experiment={opts.experiment} (variant "
                f"{v.name}) has {', '.join(tied)}; state the span with optim.decay_iters=N, or "
                f"drop extend=true to train from scratch"
            )
        if mode := check_mode(v.cfg.system.get("compile")):
            log.warning(COMPILED_EXTENSION, v.name, mode)


# Compiling is not in EXTEND_MAY_DIFFER: compiled and eager G and D play the same game closely,
# not bit for bit (inductor's kernels round and sum in another order, and the game feeds the
# differences back: README, Benchmarks (g)), so continuing a compiled run eagerly, or the reverse,
# is not the longer run and is refused like any other changed setting. Compiled on both sides, a
# continued run is still not promised to be the longer run bit for bit: which kernels run depends
# on the shapes a process has met, and in what order (a batch size met twice recompiles as
# dynamic), and a continued process meets them from its own start (resume is tested exact only
# eagerly, tests/test_compile.py). That run is a fair compiled run of its seed, so it is warned
# about, not refused.
COMPILED_EXTENSION = (
    "extend=true: variant %s trains with system.compile=%s; a run continued from a shorter one "
    "is a compiled run of its seed but not bit for bit the straight longer run (compiled "
    "kernels depend on the shapes each process has met); for exactly the longer run train with "
    "system.compile=false"
)
# Settings a continued run may change: its length, and where things are on this machine.
# (system.seed is seed_<k>'s in both runs; the preset's composed config holds the default seed.)
EXTEND_MAY_DIFFER = {"system.max_iters", "system.log_every", "data.root", "data.num_workers",
                     "data.download", "system.seed"}  # fmt: skip


def plan_extension(opts: Options, job: SeedRun, iterations: int) -> None:
    """extend=true: pick the shorter run a not-yet-started job continues, after checking that it
    trained with this command's settings (else one error naming the first key that differs)."""
    if (job.run_dir / RESULT_FILE).is_file() or resume_point(job.run_dir) is not None:
        return
    start = shorter_run_point(opts, job.variant, iterations, job.seed)
    if start is None:
        return
    shorter = start.parent.parent
    before = _settings(OmegaConf.load(shorter / "config_resolved.yaml"))
    now = _settings(job.variant.cfg)
    # Keys only one side has are a newer or older ganforge's layout, not a changed setting.
    for key in sorted((before.keys() & now.keys()) - EXTEND_MAY_DIFFER):
        if before[key] != now[key]:
            raise ConfigError(
                f"extend=true would continue {shorter}, trained with {key}={before[key]}, "
                f"but this command sets {key}={now[key]}; run with the same overrides, or "
                "drop extend=true (or pick another out=) to train from scratch"
            )
    job.extend_from = start


def _settings(cfg: Any) -> dict[str, Any]:
    """A run's `system.*` and `data.*` as dotted keys (both resolve outside a Hydra app), with
    `system.compile` as the mode it means (true is "default"; false and null are off) and
    `system.compile_dynamic` left out when nothing is compiled (it changes nothing then)."""
    settings = flat({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("system", "data")})
    if "system.compile" in settings:
        settings["system.compile"] = check_mode(settings["system.compile"])
        if settings["system.compile"] is None:
            settings.pop("system.compile_dynamic", None)
    return settings


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
