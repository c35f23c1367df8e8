"""Reading run directories as they lie on disk: what each run was, what it logged, how it ended.

Everything here reads files that `ganforge-train` (and Hydra, and `ganforge-eval`) already write;
nothing is imported from a run, and checkpoints are read only through `ganforge.checkpoint`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganforge.callbacks.progress import TRAINED_RE
from ganforge.checkpoint import stored_iteration
from ganforge.errors import CheckpointError, DataError
from ganforge.evaluation import flat_metrics

# A run is a directory holding one of these: `config_resolved.yaml` (written by `train` before any
# data is loaded) or Hydra's `.hydra/overrides.yaml` (written before the job starts, so a job that
# failed in its config checks is found too).
RESOLVED = "config_resolved.yaml"
OVERRIDES = Path(".hydra") / "overrides.yaml"
HYDRA = Path(".hydra") / "hydra.yaml"
CSV = Path("csv") / "metrics.csv"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
HEALTH = "health.json"

# Hydra's default log line: `[2026-11-29 21:25:06,674][ganforge][ERROR] - ConfigError: ...`;
# `ganforge.cli.report_user_errors` logs every user error as exactly one such line.
ERROR_LINE = re.compile(r"\[ERROR\] - (?P<message>.+)$")
# What `IterationCheckpoint` logs when SIGTERM/SIGUSR1 stopped a run that can be resumed.
SIGNAL_LINE = re.compile(r"\[WARNING\] - (?P<message>SIG\w+ received: stopped after iteration.+)$")

Series = list[tuple[int, float]]


@dataclass
class Run:
    """One run directory, as read from disk."""

    path: Path
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # resolved; {} if never written
    overrides: list[str] | None = None  # what the user (or the sweeper) typed; None: no .hydra
    choices: dict[str, Any] = field(default_factory=dict)  # Hydra's config-group choices
    hydra: dict[str, Any] = field(default_factory=dict)  # `.hydra/hydra.yaml`'s `hydra:` node
    metrics: dict[str, Series] = field(default_factory=dict)
    iterations: int = 0
    max_iters: int | None = None
    status: str = "unknown"  # finished | running | stopped | nan | failed
    error: str | None = None
    wall_s: float | None = None
    it_per_s: float | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] | None = None
    samples: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_runs(paths: list[Path]) -> list[Path]:
    """The run directories at or below each path, in a stable, human order (job 2 before 10)."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise DataError(
                f"{path} does not exist; pass a run directory, a multirun directory or a folder "
                "holding them (e.g. outputs/train/multiruns/<time>)"
            )
        if not path.is_dir():
            raise DataError(
                f"{path} is a file; pass the run directory that holds it (the folder with "
                f"{RESOLVED}), a multirun directory or a folder holding them"
            )
        for marker in path.rglob(RESOLVED):
            found.add(marker.parent.resolve())
        for marker in path.rglob(OVERRIDES.name):
            if marker.parent.name == ".hydra":
                found.add(marker.parent.parent.resolve())
    if not found:
        shown = " ".join(str(p) for p in paths)
        raise DataError(
            f"no runs under {shown}: no directory there holds {RESOLVED} or {OVERRIDES}; pass "
            "a run directory, a multirun directory (outputs/train/multiruns/<time>) or a folder "
            "holding them"
        )
    return sorted(found, key=_natural_key)


def stopped_before_training(run: Run) -> bool:
    """A single run (not a sweep's job) that stopped on a user error before training began:
    `train` writes config_resolved.yaml after its checks, so it has none. An attempt, not a run
    to compare; a sweep's failed job stays in its sweep's table."""
    multirun = str(run.hydra.get("mode", "")).upper() == "MULTIRUN"
    return run.status == "failed" and not (run.path / RESOLVED).is_file() and not multirun


def _natural_key(path: Path) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def read_run(path: Path, now: float | None = None, stale_after: float = 600.0) -> Run:
    """Everything the report needs from one run directory.

    `stale_after`: seconds without a write after which an unfinished run counts as stopped
    rather than running."""
    run = Run(path=path)
    run.config = _read_yaml(path / RESOLVED, default={}) or {}
    if (path / OVERRIDES).is_file():
        run.overrides = [str(o) for o in (_read_yaml(path / OVERRIDES, default=[]) or [])]
    hydra_yaml = _read_yaml(path / HYDRA, default={}) or {}
    run.hydra = hydra_yaml.get("hydra", {}) if isinstance(hydra_yaml, dict) else {}
    run.choices = dict((run.hydra.get("runtime") or {}).get("choices") or {})
    if not run.config and (path / ".hydra" / "config.yaml").is_file():
        # The job failed before `train` wrote the resolved config: Hydra's unresolved copy still
        # holds the plain values (seed, max_iters); interpolations stay as their text.
        run.config = _read_yaml(path / ".hydra" / "config.yaml", default={}) or {}
    max_iters = (run.config.get("train") or {}).get("max_iters")
    run.max_iters = max_iters if isinstance(max_iters, int) else None

    now = time.time() if now is None else now
    last_write = _newest_mtime(path)
    recently_written = last_write is not None and now - last_write < stale_after
    error, signal = _log_lines(path / "train.log")

    ckpt_iteration = _checkpoint_iteration(run) or 0
    done = run.max_iters is not None and ckpt_iteration >= run.max_iters
    csv_path = path / CSV
    if csv_path.is_file():
        # Whether a cut-off last line is a row being written or damage depends on whether the
        # run can still be writing: only if it has not ended (no error, not done) and wrote
        # recently.
        writing = error is None and not done and recently_written
        run.metrics, cut = read_metrics(csv_path, may_be_writing=writing)
        if cut:
            run.notes.append("last CSV line still being written: left out")
    elif run.config and not (run.config.get("logger") or {}).get("csv") and error is None:
        # Only CSVLogger's file holds the metrics; W&B or TensorBoard alone leave nothing here.
        run.notes.append(
            "no csv/metrics.csv: trained without the CSV logger, so no metrics to compare; "
            "keep it beside another logger with e.g. 'logger=[csv,wandb]'"
        )
    csv_last = max((s[-1][0] for s in run.metrics.values() if s), default=0)
    run.iterations = max(csv_last, ckpt_iteration)

    if error is not None:
        run.error = error
        # NonFiniteLossError (a NaN/inf loss) or NonFiniteWeightsError (diverged weights).
        run.status = "nan" if error.startswith("NonFinite") else "failed"
    elif run.max_iters is not None and run.iterations >= run.max_iters:
        run.status = "finished"
    elif recently_written:
        run.status = "running"
    elif signal is not None:
        run.status = "stopped"
        run.error = signal
    else:
        run.status = "stopped"
        if run.max_iters is None:
            run.error = "train.max_iters=null: ran until trainer.max_epochs; no error logged"
        else:
            run.error = (
                f"stopped at iteration {run.iterations} of {run.max_iters} with no error in "
                f"train.log and no write for {format_duration(now - (last_write or now))} "
                "(killed, or a crash whose traceback went to the console only)"
            )
    _timing(run)
    run.samples = sorted(path.glob("samples/iter_*.png"))
    run.evals = _read_evals(path)
    run.health = read_health(path / HEALTH) if (path / HEALTH).is_file() else None
    return run


def _read_yaml(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise DataError(
            f"{path} is not valid YAML ({first}); it was damaged after the run wrote it: repair "
            "or delete it, or leave this run out of the paths"
        ) from None


def read_metrics(path: Path, may_be_writing: bool) -> tuple[dict[str, Series], bool]:
    """`stage/name` -> [(iteration, value)] from Lightning's CSVLogger file.

    Rows are sparse: each `log_metrics` call (train metrics every `log_every` iterations, `val/*`
    after each evaluation) is one row, with the other columns empty. Returns the series and
    whether a cut-off last line was left out (allowed only while the run may be writing it)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not text (byte {err.start} is not UTF-8): it is damaged, or not the CSV "
            "ganforge-train writes; delete it (or the run) and report again"
        ) from None
    if "\0" in text:
        raise DataError(
            f"{path} holds NUL bytes (line {text[: text.index(chr(0))].count(chr(10)) + 1}): it "
            "is damaged (e.g. a crash while the disk was full); delete it (or the run) and "
            "report again"
        )
    lines = text.split("\n")
    cut = False
    if lines and lines[-1] == "":
        lines.pop()
    elif text:
        # No newline at the end: the writer was interrupted inside the last row.
        if not may_be_writing:
            raise DataError(
                f"{path} is cut off in the middle of line {len(lines)} "
                f"({lines[-1][:40]!r}...), and the run is not writing it any more; the file was "
                "damaged (disk full, or copied while being written): delete that line "
                f"(e.g. `sed -i '$d' {path}`) or the run, then report again"
            )
        lines.pop()
        cut = True
    if not lines:
        return {}, cut
    rows = list(csv.reader(lines))
    header = rows[0]
    if "step" not in header:
        raise DataError(
            f"{path} line 1 is not a ganforge metrics header (no 'step' column): {lines[0][:60]!r}"
            "; the file is damaged or not written by ganforge-train's CSV logger"
        )
    step_col = header.index("step")
    series: dict[str, Series] = {name: [] for name in header if name != "step"}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            if number == len(rows) and may_be_writing:
                # Lightning rewrites the whole file when a new metric appears (new header); a
                # reader can catch that rewrite half done.
                cut = True
                break
            raise DataError(
                f"{path} line {number} has {len(row)} fields but the header has {len(header)}: "
                "the line is cut short or damaged; delete it (or the run) and report again"
            )
        try:
            step = int(float(row[step_col]))
        except ValueError:
            raise DataError(
                f"{path} line {number}: step {row[step_col]!r} is not a number; the file is "
                "damaged: delete that line (or the run) and report again"
            ) from None
        for name, value in zip(header, row, strict=True):
            if name == "step" or value == "":
                continue
            try:
                series[name].append((step, float(value)))
            except ValueError:
                raise DataError(
                    f"{path} line {number}: {name}={value!r} is not a number; the file is "
                    "damaged: delete that line (or the run) and report again"
                ) from None
    # By iteration only (a stable sort): a resumed run that logged an iteration again keeps the
    # later write last, as the newer value.
    return {k: sorted(v, key=lambda p: p[0]) for k, v in series.items() if v}, cut


def _log_lines(path: Path) -> tuple[str | None, str | None]:
    """The last one-line error in train.log, and the last 'stopped by a signal' warning."""
    error = signal = None
    if not path.is_file():
        return None, None
    for line in path.read_text(errors="replace").splitlines():
        if m := ERROR_LINE.search(line):
            error = m["message"].strip()
        elif m := SIGNAL_LINE.search(line):
            signal = m["message"].strip()
    return error, signal


def _newest_mtime(path: Path) -> float | None:
    """When the run last wrote anything we read (its log, metrics, checkpoints or samples)."""
    candidates = [path / "train.log", path / CSV, path / RESOLVED, path / HEALTH]
    for folder in ("checkpoints", "samples"):
        if (path / folder).is_dir():
            candidates.append(path / folder)
            candidates.extend((path / folder).iterdir())
    times = [p.stat().st_mtime for p in candidates if p.exists()]
    return max(times) if times else None


def _checkpoint_iteration(run: Run) -> int | None:
    """The iteration stored in checkpoints/last.ckpt (exact, where the CSV only has every
    `log_every`-th iteration), read through ganforge.checkpoint's validated loader."""
    path = run.path / LAST_CKPT
    if not path.is_file():
        return None
    try:
        return stored_iteration(path)
    except CheckpointError as err:
        run.notes.append(str(err))
        return None


def _timing(run: Run) -> None:
    """Wall time: from `config_resolved.yaml` (written by `train` after its checks, before the
    data is built) to the last write of `csv/metrics.csv` (its last logged row). iterations/s is
    the training's own: the iterations over the training time each process of this directory
    logged at its end (`callbacks.progress.TRAINED_RE`: setup and the final evaluation not
    counted); for a run without those lines (older, or killed), the iterations trained here over
    the wall time."""
    start, end = run.path / RESOLVED, run.path / CSV
    if not (start.is_file() and end.is_file()):
        return
    run.wall_s = max(end.stat().st_mtime - start.stat().st_mtime, 0.0)
    log_path = run.path / "train.log"
    if log_path.is_file():
        found = TRAINED_RE.findall(log_path.read_text(errors="replace"))
        iterations, seconds = sum(int(n) for n, _ in found), sum(float(t) for _, t in found)
        if iterations > 0 and seconds > 0:
            run.it_per_s = iterations / seconds
            return
    first = _resumed_from(run)
    trained = run.iterations - first
    if run.wall_s > 0 and trained > 0:
        run.it_per_s = trained / run.wall_s


def _resumed_from(run: Run) -> int:
    """The iteration this directory's training started at: 0, or the resumed checkpoint's."""
    ckpt = run.config.get("ckpt_path")
    if not ckpt and run.config.get("resume") == "auto" and (run.path / "train.log").is_file():
        for line in (run.path / "train.log").read_text(errors="replace").splitlines():
            if "resume=auto: continuing " in line:
                ckpt = line.split("resume=auto: continuing ", 1)[1].strip()
    if not ckpt:
        return 0
    try:
        return stored_iteration(ckpt)
    except CheckpointError:
        # The checkpoint it resumed from is gone: the rate is unknown, not made up.
        run.notes.append(f"resumed from {ckpt}, which is no longer readable: it/s left out")
        return run.iterations


def _read_evals(path: Path) -> list[dict[str, Any]]:
    """`ganforge-eval`'s `<ckpt>.eval.json` files in the run, metrics named `val/*` as in the CSV
    (through `ganforge.evaluation.flat_metrics`, the owner of that naming)."""
    evals = []
    for file in sorted(path.rglob("*.eval.json")):
        try:
            data = json.loads(file.read_text())
            metrics = flat_metrics(data["metrics"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"{file} is not a ganforge-eval report ({type(err).__name__}: {err}); "
                "rerun ganforge-eval on its checkpoint or delete the file"
            ) from None
        evals.append(
            {
                "file": str(file.relative_to(path)),
                "iteration": data.get("iteration"),
                "generator": data.get("generator"),
                "metrics": metrics,
                "n_samples": (data.get("protocol") or {}).get("n_generated"),
            }
        )
    return evals


def read_health(path: Path) -> list[dict[str, Any]]:
    """Episodes from a training-health monitor's `health.json` (issue #14): a list (or
    `{"episodes": [...]}`) of `{"state": str, "start": int, "end": int | null, ...}`."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete or repair it") from None
    episodes = data.get("episodes") if isinstance(data, dict) else data
    if not isinstance(episodes, list):
        raise DataError(
            f"{path} holds no list of episodes; expected [{{'state': ..., 'start': N, "
            "'end': N or null}, ...] (or {'episodes': [...]})"
        )
    checked = []
    for i, ep in enumerate(episodes):
        ok = (
            isinstance(ep, dict)
            and isinstance(ep.get("state"), str)
            and isinstance(ep.get("start"), int)
            and (ep.get("end") is None or isinstance(ep.get("end"), int))
        )
        if not ok:
            raise DataError(
                f"{path} episode {i} is {ep!r}; each episode needs 'state' (text), 'start' "
                "(an iteration) and optionally 'end' (an iteration or null)"
            )
        checked.append(ep)
    return checked


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def read_runs(dirs: list[Path], stale_after: float = 600.0) -> list[Run]:
    """Read the runs in `dirs` (from `find_runs`); names are paths relative to their common
    folder."""
    now = time.time()
    runs = [read_run(d, now=now, stale_after=stale_after) for d in dirs]
    if len(dirs) == 1:
        runs[0].name = dirs[0].name
    else:
        common = Path(*_common_prefix([d.parts for d in dirs]))
        for run in runs:
            run.name = str(run.path.relative_to(common))
    return runs


def _common_prefix(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return tuple(prefix)
