"""`ganforge-reproduce`: run an experiment preset over seeds and set its numbers beside the paper's.

    ganforge-reproduce experiment=pacgan_grid seeds=5 [budget=N] [jobs=2] [variant=GAN,PacGAN4]
                       [out=DIR] [threads=T] [extend=true] [any ganforge-train override ...]

Each (variant, seed) is one `ganforge-train` process with a stable run directory,
`OUT/<experiment>/<variant>/iters_<budget>/seed_<k>`, so running the same command again resumes
an interrupted run from its newest readable checkpoint and skips the finished ones. `jobs`
processes run at once, each with `num_threads=threads` (default: the cores split between jobs)
so that they do not fight over cores. With `extend=true`, a run that has not started continues
the same variant and seed's longest shorter run (`iters_<M>`, M < budget) from its checkpoint
instead of starting from scratch: with exact resume and no schedule tied to the run's length
(refused otherwise), that is the longer run, for the cost of the missing iterations only.

The paper's side comes from the preset alone, never from code: its `paper:` key holds the
source, the paper's run length, its evaluation `protocol` and, per variant (the preset plus some
overrides, e.g. `model.pack=1 data.batch_size=100`), each metric's mean and error bar. A run is
evaluated with that protocol: for 2-D mixtures, its final checkpoint is sampled `n_samples`
times and a mode counts as covered with `min_per_mode` high-quality points; otherwise the final
`val/*` values of the run's own evaluation are read from its csv/metrics.csv. The table (printed,
and written as markdown and JSON beside the runs) gives per metric: the paper's mean ± error,
the measured mean ± std over seeds with n, the per-seed values, the iterations run, the sample
count, whether the paper's mean lies within the measured mean ± 2 std, and why a row is not
comparable with the paper (a shorter run, fewer samples, a metric ganforge does not compute).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganforge import checkpoint
from ganforge.cli import check_writable
from ganforge.errors import CheckpointError, ConfigError, GanforgeError, check_int
from ganforge.metrics.toy2d import mode_stats
from ganforge.models.protocols import is_image_data
from ganforge.overrides import check_overrides, config_loader, normalize
from ganforge.preflight import check_config, check_loggers
from ganforge.report.table import flat
from ganforge.schedules import tied_to_run_length
from ganforge.train import build, config_dir

log = logging.getLogger("ganforge")

# Keys of the command itself; everything else goes to ganforge-train.
OWN_KEYS = ("experiment", "seeds", "budget", "jobs", "variant", "out", "threads", "extend")
# Set by the harness for each run: a user override of these would break the stable run
# directories or the table's bookkeeping.
RESERVED = ("seed", "train.max_iters", "hydra.run.dir", "ckpt_path", "resume", "num_threads")
RESULT_FILE = "reproduce_result.json"
# mode_stats fixes the high-quality radius; a preset asking for another one cannot be honoured.
MODE_STATS_SIGMAS = 3


@dataclass(frozen=True)
class Options:
    experiment: str
    seeds: int = 3
    budget: int | None = None
    jobs: int = 1
    variants: tuple[str, ...] = ()
    out: Path = Path("outputs") / "reproduce"
    threads: int | None = None
    overrides: tuple[str, ...] = ()
    extend: bool = False


@dataclass
class Variant:
    name: str
    overrides: list[str]
    paper: dict[str, dict[str, float]]  # metric -> {"mean", "err"}
    cfg: DictConfig


@dataclass
class SeedRun:
    variant: Variant
    seed: int
    run_dir: Path
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extend_from: Path | None = None  # extend=true: the shorter run's checkpoint to continue


# --- command line ---------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> Options:
    """`key=value` arguments -> Options; a ConfigError naming the argument on a bad one."""
    own: dict[str, str] = {}
    rest: list[str] = []
    for arg in normalize(list(argv)):  # --key=value as well as key=value
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(
                f"argument {arg!r} is not key=value; e.g. ganforge-reproduce "
                "experiment=pacgan_grid seeds=3 budget=5000"
            )
        if key in OWN_KEYS:
            own[key] = value
        elif key.lstrip("+~") in RESERVED:
            raise ConfigError(
                f"{key} is set by ganforge-reproduce for each run; use seeds=N (seeds 0..N-1), "
                "budget=ITERATIONS and threads=T instead, and run the command again to resume"
            )
        else:
            rest.append(arg)
    if not own.get("experiment"):
        raise ConfigError(
            "experiment=NAME is required, e.g. ganforge-reproduce experiment=pacgan_grid "
            f"seeds=3; presets: {', '.join(presets())}"
        )
    variants = tuple(v for v in own.get("variant", "").split(",") if v)
    if "out" in own:
        check_writable("out", own["out"])
    return Options(
        experiment=own["experiment"],
        seeds=_positive_int("seeds", own.get("seeds", "3")),
        budget=_positive_int("budget", own["budget"]) if "budget" in own else None,
        jobs=_positive_int("jobs", own.get("jobs", "1")),
        variants=variants,
        out=Path(
            own.get("out") or Path(os.environ.get("GANFORGE_LOG_DIR", "outputs")) / "reproduce"
        ),
        threads=_positive_int("threads", own["threads"]) if "threads" in own else None,
        overrides=tuple(rest),
        extend=_flag("extend", own.get("extend", "false")),
    )


def _flag(key: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ConfigError(f"{key}={text} must be true or false")
    return text.lower() == "true"


def _positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    # Not errors.check_int: this reads command-line text ("3", not 3), so it must parse first and
    # refuse what int() would round or accept loosely ("3.0" fails, " 3", "+3" pass).
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise ConfigError(f"{key}={text} must be a positive integer, e.g. {key}=3")
    return value


def presets() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


# --- the variants of a preset ---------------------------------------------------------------------
def compose_variants(opts: Options) -> list[Variant]:
    """The preset's variants (from `paper.variants`, else one run of the preset as it is), each
    composed with the user's overrides: a bad key or value fails here, before any training."""
    if opts.experiment not in presets():
        raise ConfigError(
            f"experiment={opts.experiment} is not a preset; choose one of {', '.join(presets())}"
        )
    base = _compose(opts.experiment, list(opts.overrides))
    paper = base.get("paper") or {}
    declared = list(paper.get("variants") or [{"name": "preset", "overrides": [], "metrics": {}}])
    names = [str(v["name"]) for v in declared]
    unknown = sorted(set(opts.variants) - set(names))
    if unknown:
        raise ConfigError(
            f"variant={','.join(unknown)} is not a variant of experiment={opts.experiment}; "
            f"it has {', '.join(names)} (see paper.variants in the preset)"
        )
    variants = []
    for v in declared:
        if opts.variants and v["name"] not in opts.variants:
            continue
        overrides = [str(o) for o in v.get("overrides") or []]
        cfg = _compose(opts.experiment, overrides + list(opts.overrides))
        try:
            # The checks ganforge-train makes first, made here before any variant trains.
            check_config(cfg)
            check_loggers(cfg)
        except ConfigError as err:
            raise ConfigError(
                f"variant {v['name']} of experiment={opts.experiment}: {err}"
            ) from None
        metrics = OmegaConf.to_container(v.get("metrics") or OmegaConf.create({}), resolve=True)
        variants.append(Variant(str(v["name"]), overrides, metrics, cfg))  # type: ignore[arg-type]
    return variants


def _compose(experiment: str, overrides: list[str]) -> DictConfig:
    # A typo gets the closest real key, as on ganforge-train's command line.
    loader = config_loader(config_dir())
    check_overrides(loader, "train", [f"experiment={experiment}", *overrides], "ganforge-train")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("train", overrides=[f"experiment={experiment}", *overrides])
    except (HydraException, MissingConfigException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"experiment={experiment} with overrides {overrides} does not compose: {first}; "
            "fix the override (ganforge-train accepts the same ones)"
        ) from None


def protocol_of(cfg: DictConfig) -> dict[str, Any] | None:
    """The preset's `paper.protocol`, checked; None when it has none.

    2-D mixtures: `n_samples` (one count), `min_per_mode`, `sigmas`, `ema` — the harness samples
    the final checkpoint itself. Image presets: `n_samples` is one count or a mapping from metric
    to the count the paper computed it on (IS and FID often differ, e.g. 50,000 and 5,000); the
    harness reads the run's own evaluation and says when its sample count differs."""
    protocol = OmegaConf.select(cfg, "paper.protocol")
    if protocol is None:
        return None
    p = OmegaConf.to_container(protocol, resolve=True)
    assert isinstance(p, dict)
    counts = p.get("n_samples")
    for key, value in counts.items() if isinstance(counts, dict) else [("", counts)]:
        check_int(f"paper.protocol.n_samples{'.' + key if key else ''}", value)
    if is_image_data(cfg.data.get("channels")):
        return p
    if isinstance(counts, dict):
        raise ConfigError(
            "paper.protocol.n_samples must be one count for a 2-D mixture (the harness draws "
            f"that many points for every metric), not {counts}"
        )
    check_int("paper.protocol.min_per_mode", p.get("min_per_mode"))
    if p.get("sigmas", MODE_STATS_SIGMAS) != MODE_STATS_SIGMAS:
        raise ConfigError(
            f"paper.protocol.sigmas={p['sigmas']} but ganforge's mode metric counts a point as "
            f"high quality within {MODE_STATS_SIGMAS} std (metrics/toy2d.py); set sigmas: 3"
        )
    return p


def paper_samples(protocol: dict[str, Any], metric: str) -> int | None:
    """How many samples the paper computed `metric` on, when the preset says."""
    counts = protocol.get("n_samples")
    return counts.get(metric) if isinstance(counts, dict) else counts


# --- the training processes ----------------------------------------------------------------------
# What stops the harness from a terminal, `kill` or a closed session; each stops its children.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# How long a stopped ganforge-train may take to save its checkpoint (it does so after its current
# iteration, IterationCheckpoint) before it is killed.
GRACE_S = 30.0
LOCK_FILE = "reproduce.lock"


class Stopped(Exception):
    """A stop signal reached the harness (raised in the main thread by its handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Children:
    """The ganforge-train processes this harness started. When the harness is stopped or fails,
    all are stopped together, SIGTERM first (each saves a checkpoint after its current iteration)
    and SIGKILL after `grace_s`, and waited for: a child left training would write into the run
    directory of the next `ganforge-reproduce` with the same arguments."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self.stopping = False
        self.hurry = False  # a second signal: kill now
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def run(
        self, command: list[str], on_start: Callable[[int], None] | None = None, **kwargs: Any
    ) -> int | None:
        """Run `command` to its end and return its exit code; None if the harness is stopping
        (nothing started). `on_start` gets the new process's pid."""
        with self._lock:  # no child starts after stop() took its list
            if self.stopping:
                return None
            proc = subprocess.Popen(command, **kwargs)
            self._running.add(proc)
        try:
            if on_start is not None:
                on_start(proc.pid)
            return proc.wait()
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop(self) -> int:
        """Stop every running child and wait for it; how many there were."""
        with self._lock:
            self.stopping = True
            procs = list(self._running)
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + self.grace_s
        while any(p.poll() is None for p in procs):
            if self.hurry or time.monotonic() > deadline:
                for proc in procs:
                    proc.kill()
                for proc in procs:
                    proc.wait()
                break
            time.sleep(0.1)
        return len(procs)


def claim(folder: Path) -> Path:
    """Lock `folder` for this harness: one clear error if another ganforge-reproduce (or the
    training it started, which outlives a harness killed with SIGKILL) is using it; a lock
    whose processes are all gone is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _read_lock(path)
            alive = [pid for pid, started in holder.get("processes", []) if _alive(pid, started)]
            if alive and holder.get("host") == socket.gethostname():
                raise GanforgeError(
                    f"{folder} is in use by another ganforge-reproduce or its training (pid "
                    f"{', '.join(map(str, alive))}, see {path}); wait for it to finish or stop "
                    f"it (kill {alive[0]}), then run this command again to resume"
                ) from None
            # (Another machine's processes cannot be asked: a shared folder in use there is
            # refused by the harness there.)
            log.warning("%s: taking over the lock of a stopped harness (%s)", folder, holder)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_lock_record(), f)
        return path
    raise GanforgeError(f"{path} is being claimed by another process; run the command again")


def note_child(lock: Path, pid: int) -> None:
    """Record the training process in the lock, so that a rerun also finds a child left by a
    harness killed without a chance to stop it (SIGKILL)."""
    tmp = lock.with_suffix(".tmp")
    tmp.write_text(json.dumps(_lock_record(pid)))
    os.replace(tmp, lock)


def release(lock: Path) -> None:
    if _read_lock(lock).get("processes", [[None]])[0][0] == os.getpid():
        lock.unlink(missing_ok=True)


def _lock_record(child: int | None = None) -> dict[str, Any]:
    pids = [os.getpid()] + ([child] if child is not None else [])
    return {"host": socket.gethostname(), "processes": [[p, _start_time(p)] for p in pids]}


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # unreadable or half written: nobody's
    return data if isinstance(data, dict) else {}


def _start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid it names
    one process, as pids are reused. None without /proc (macOS) or for a finished process."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: Any, started: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    now = _start_time(pid)
    if now is None:
        return not Path("/proc").is_dir()  # a zombie, or no /proc to tell: alive is all we know
    return started is None or now == started


# --- running one seed -----------------------------------------------------------------------------
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
    """A run's `system.*` and `data.*` as dotted keys (both resolve outside a Hydra app)."""
    return flat({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("system", "data")})


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


# --- evaluation -----------------------------------------------------------------------------------
def evaluate_run(
    folder: Path, protocol: dict[str, Any] | None
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """(metrics, sample count per metric, note) of a finished run."""
    cfg = OmegaConf.load(folder / "config_resolved.yaml")
    assert isinstance(cfg, DictConfig)
    if protocol is not None and not is_image_data(cfg.data.get("channels")):
        return mode_protocol(folder, cfg, protocol)
    return logged_metrics(folder, cfg)


def mode_protocol(
    folder: Path, cfg: DictConfig, protocol: dict[str, Any]
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """The paper's 2-D protocol on the final checkpoint: n samples from the (raw or EMA) G, in
    inference mode, from a seeded noise stream; a mode is covered with `min_per_mode` points."""
    ckpt = checkpoint.load(folder / "checkpoints" / "last.ckpt", key="checkpoint")
    G, used_ema = ckpt.build_generator(ema=bool(protocol.get("ema", False)))
    data = build(cfg.data, shuffle_seed=0)  # the mixture the run trained on: modes and std
    n = int(protocol["n_samples"])
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(cfg.metrics.seed)))
    with torch.no_grad():
        samples = G(z)
    stats = mode_stats(samples, data.modes, data.std, min_count=int(protocol["min_per_mode"]))
    metrics = {f"val/{name}": float(value) for name, value in stats.items()}
    note = f"final checkpoint (iteration {ckpt.iteration}), {'EMA' if used_ema else 'raw'} G"
    return metrics, dict.fromkeys(metrics, n), note


def logged_metrics(
    folder: Path, cfg: DictConfig
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """The last logged value of each val/* metric in the run's csv/metrics.csv."""
    path = folder / "csv" / "metrics.csv"
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: the run logged no metrics; keep logger=csv (the default)"
        )
    last: dict[str, float] = {}
    step: dict[str, int] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("val/") and value not in ("", None):
                    last[key], step[key] = float(value), int(float(row.get("step") or -1))
    # The last logged values are the end-of-training evaluation's, which may use its own count.
    evaluation = OmegaConf.select(cfg, "callbacks.evaluation.final_n_samples") or OmegaConf.select(
        cfg, "callbacks.evaluation.evaluator.n_samples"
    )
    steps = sorted(set(step.values()))
    note = f"last periodic evaluation (iteration {', '.join(map(str, steps)) or 'none'})"
    return last, dict.fromkeys(last, evaluation), note


# --- the table ------------------------------------------------------------------------------------
def summarize(
    variants: list[Variant], jobs: list[SeedRun], iterations: dict[str, int], opts: Options
) -> dict[str, Any]:
    rows = []
    for variant in variants:
        runs = [j for j in jobs if j.variant is variant]
        done = [j for j in runs if j.result]
        paper_iters = OmegaConf.select(variant.cfg, "paper.iterations")
        protocol = protocol_of(variant.cfg) or {}
        # The paper's metrics first (measured or not), then what ganforge measured besides.
        measured = sorted({m for j in done for m in j.result["metrics"]} - set(variant.paper))
        names = [*variant.paper, *measured]
        for name in names:
            values = [
                (j.seed, j.result["metrics"][name]) for j in done if name in j.result["metrics"]
            ]
            samples = {j.result["n_samples"].get(name) for j in done if name in j.result["metrics"]}
            paper = variant.paper.get(name)
            rows.append(
                _row(
                    variant,
                    name,
                    values,
                    samples,
                    paper,
                    iterations[variant.name],
                    paper_iters,
                    protocol,
                )
            )
        for j in runs:
            if j.error:
                rows.append(
                    {"variant": variant.name, "metric": "-", "note": f"seed {j.seed}: {j.error}"}
                )
    return {
        "experiment": opts.experiment,
        "source": OmegaConf.select(variants[0].cfg, "paper.source"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "seeds": opts.seeds,
        "jobs": opts.jobs,
        "overrides": list(opts.overrides),
        "iterations": iterations,
        "rows": rows,
        "runs": [
            {
                "variant": j.variant.name,
                "seed": j.seed,
                "dir": str(j.run_dir),
                **j.result,
                "error": j.error,
            }
            for j in jobs
        ],
    }


def _row(
    variant: Variant,
    name: str,
    values: list[tuple[int, float]],
    samples: set[int | None],
    paper: dict[str, float] | None,
    iterations: int,
    paper_iters: int | None,
    protocol: dict[str, Any],
) -> dict[str, Any]:
    finite = [v for _, v in values if math.isfinite(v)]
    n = len(values)
    mean = statistics.fmean(finite) if finite and len(finite) == n else (math.inf if n else None)
    std = statistics.stdev(finite) if len(finite) == n and n >= 2 else None
    notes = []
    within: bool | None = None
    if paper is None:
        notes.append("no paper number for this metric")
    elif not values:
        notes.append("not measured: ganforge does not compute this metric")
    else:
        if std is not None and mean is not None and math.isfinite(mean):
            within = abs(paper["mean"] - mean) <= 2 * std
        if paper_iters and iterations < paper_iters:
            notes.append(
                f"not comparable: {iterations:,} of the paper's {paper_iters:,} iterations"
            )
        want = paper_samples(protocol, name)
        if want and samples != {want}:
            notes.append(
                f"not comparable: {sorted(map(str, samples))} samples vs the paper's {want}"
            )
    if n and len(finite) < n:
        notes.append("a seed has no high-quality sample (infinite reverse KL)")
    return {
        "variant": variant.name,
        "metric": name,
        "paper_mean": paper["mean"] if paper else None,
        "paper_err": paper.get("err") if paper else None,
        "paper_iterations": paper_iters,
        "mean": mean,
        "std": std,
        "n": n,
        "per_seed": {str(s): v for s, v in values},
        "iterations": iterations,
        "n_samples": sorted(s for s in samples if s is not None),
        "paper_within_2std": within,
        "note": "; ".join(notes),
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"`ganforge-reproduce experiment={summary['experiment']}` — {summary['date']}, "
        f"{summary['machine']}, torch {summary['torch']}, {summary['seeds']} seeds, "
        f"jobs={summary['jobs']}"
        + (f", overrides {summary['overrides']}" if summary["overrides"] else ""),
        "",
        f"Paper: {summary['source'] or '–'}. Within: the paper's mean lies within the measured "
        "mean ± 2 std over seeds.",
        "",
        "| variant | metric | paper | measured mean ± std (n) | per seed | iterations | samples "
        "| within | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        if r["metric"] == "-":
            lines.append(f"| {r['variant']} | – | | | | | | | {r['note']} |")
            continue
        paper = (
            "–" if r["paper_mean"] is None else f"{_fmt(r['paper_mean'])} ± {_fmt(r['paper_err'])}"
        )
        measured = f"{_fmt(r['mean'])} ± {_fmt(r['std'])} ({r['n']})" if r["n"] else "–"
        seeds = ", ".join(f"{s}: {_fmt(v)}" for s, v in r["per_seed"].items()) or "–"
        within = {True: "yes", False: "no", None: "–"}[r["paper_within_2std"]]
        samples = ", ".join(map(str, r["n_samples"])) or "–"
        lines.append(
            f"| {r['variant']} | {r['metric']} | {paper} | {measured} | {seeds} | "
            f"{r['iterations']:,} | {samples} | {within} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------------
def reproduce(opts: Options, children: Children | None = None) -> dict[str, Any]:
    """Run (or resume) every variant x seed, evaluate, write and return the summary. Whatever
    ends it early (an exception, or a signal raised as one, see `main`) stops the training
    processes first."""
    variants = compose_variants(opts)
    if opts.extend:
        check_extendable(variants, opts)
    protocols = {v.name: protocol_of(v.cfg) for v in variants}
    iterations = {}
    for v in variants:
        length = opts.budget or OmegaConf.select(v.cfg, "paper.iterations") or v.cfg.train.max_iters
        if not length:
            raise ConfigError(
                f"experiment={opts.experiment} sets no run length (paper.iterations and "
                "train.max_iters are null); pass budget=ITERATIONS"
            )
        iterations[v.name] = int(length)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    jobs = [
        SeedRun(v, seed, run_dir(opts, v, iterations[v.name], seed))
        for v in variants
        for seed in range(opts.seeds)
    ]
    for job in jobs if opts.extend else []:  # every check before any training
        plan_extension(opts, job, iterations[job.variant.name])
    children = Children() if children is None else children
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
    summary = summarize(variants, jobs, iterations, opts)
    stem = (
        opts.out
        / opts.experiment
        / ("table_" + "_".join(f"{k}-{v}" for k, v in iterations.items()))
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown(summary))
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    summary["files"] = [str(stem.with_suffix(".md")), str(stem.with_suffix(".json"))]
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help", "help"} & set(args):
        print(__doc__)
        return
    children = Children()
    previous = _stop_on_signals(children)
    try:
        opts = parse_args(args)
        summary = reproduce(opts, children)
    except Stopped as stop:
        log.error(
            "ganforge-reproduce stopped by %s: its training processes were stopped (each saved "
            "a checkpoint when it could); run the same command again to resume",
            stop,
        )
        sys.exit(128 + stop.signum)
    except GanforgeError as err:
        log.error("%s: %s", type(err).__name__, err)
        sys.exit(2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(markdown(summary))
    print("written:", *summary["files"])
    if any(r.get("error") for r in summary["runs"]):
        sys.exit(1)


def _stop_on_signals(children: Children) -> dict[int, Any]:
    """SIGTERM, SIGINT and SIGHUP raise Stopped in the main thread (wherever it waits), so that
    `reproduce` stops its children on the way out; a second one while they are being stopped
    kills them at once instead of waiting for their checkpoints. Returns the handlers replaced."""
    fired = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if fired.is_set():
            children.hurry = True
            return
        fired.set()
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (a library caller's thread)
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


if __name__ == "__main__":
    main()
