"""What the console commands share: a user error becomes one logged line and exit code 2.

In a Hydra multirun (`-m`) a job's user error is logged and the sweep goes on with the next job;
`run_hydra_main` then exits 2 after the sweep when any job failed that way.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ganforge.errors import ConfigError, GanforgeError

log = logging.getLogger("ganforge")


def config_dir() -> Path:
    """`conf/` inside an installed wheel, else the repository's top-level `conf/` (editable).
    Here, in a module that loads neither torch nor Lightning, so ganforge-eval can name its config
    folder before its first line."""
    packaged = Path(__file__).with_name("conf")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


T = TypeVar("T")

# Jobs of this process's multirun that stopped on a user error (their messages were logged).
failed_jobs: list[str] = []
# Every job of this process's multirun: {"num", "overrides", "result"}, for the closing table.
jobs: list[dict[str, Any]] = []
sweep_dirs: set[str] = set()


def record_job(result: str) -> None:
    """Note how this multirun job ended (a line of the table printed after the sweep)."""
    if not _in_multirun():
        return
    hydra = HydraConfig.get()
    overrides = " ".join(str(o) for o in hydra.overrides.task) or "(no overrides)"
    jobs.append({"num": hydra.job.num, "overrides": overrides, "result": result})
    sweep_dirs.add(str(Path(str(hydra.runtime.output_dir)).parent))


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task so a GanforgeError (bad config, missing data, corrupt checkpoint) prints
    its message — which names the key or file and the fix — instead of a traceback."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except GanforgeError as err:
            log.error("%s: %s", type(err).__name__, err)
            if not _in_multirun():
                sys.exit(2)
            # A sweep goes on: Hydra's launchers stop at a job that raises (or exits).
            failed_jobs.append(f"job {HydraConfig.get().job.num}: {err}")
            record_job(f"failed: {type(err).__name__}")
            cfg = args[0] if args and isinstance(args[0], DictConfig) else None
            # A sweeper optimizing an objective records NaN as a failed trial; None would stop it.
            return float("nan") if cfg is not None and cfg.get("objective") else None  # type: ignore[return-value]

    return wrapper


def run_hydra_main(hydra_main: Callable[[], Any], config_name: str | None = None) -> None:
    """Call a `@hydra.main` function once its command line is checked (`check_command_line`);
    after a multirun where jobs failed on user errors, say how many and exit 2 (jobs run by a
    launcher in other processes log their own errors)."""
    check_command_line(hydra_main, config_name)
    for record in (failed_jobs, jobs, sweep_dirs):
        record.clear()  # a process that runs several commands (tests) reports each one's own
    hydra_main()
    if jobs:
        from ganforge.summary import multirun_lines

        sweep = next(iter(sweep_dirs)) if len(sweep_dirs) == 1 else None
        for line in multirun_lines(jobs, sweep):
            log.info(line)
    if failed_jobs:
        print(f"{len(failed_jobs)} job(s) stopped on a user error:", file=sys.stderr)
        for line in failed_jobs:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)


def check_command_line(hydra_main: Callable[[], Any], config_name: str | None = None) -> None:
    """`--key=value` arguments become `key=value` in sys.argv (what Hydra then reads), and every
    override is checked against the config it changes (ganforge.overrides): a mistake is one
    line and exit 2 before Hydra creates a run folder."""
    from ganforge import overrides  # Hydra internals: imported only by the console commands

    # The config `@hydra.main(config_path=..., config_name=...)` was given (its closure holds
    # them; Hydra keeps no other record of them).
    given = inspect.getclosurevars(hydra_main).nonlocals
    name = config_name or given.get("config_name")
    config_path = given.get("config_path")
    try:
        sys.argv[1:] = overrides.normalize(sys.argv[1:])
        if name and config_path:
            overrides.check_argv(sys.argv[1:], Path(config_path), name, sys.argv[0])
    except ConfigError as err:
        print(f"ConfigError: {err}", file=sys.stderr)  # Hydra has not set up logging yet
        sys.exit(2)


def check_writable(key: str, path: str | Path) -> None:
    """`path` is, or can be created as, a folder we can write to; else a ConfigError naming `key`.

    Probed by creating (and removing) a file in the nearest existing folder: permission bits say
    nothing to root, and a read-only mount refuses root as well.
    """
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            problem = f"{key}={path} is a file, not a folder"
        else:
            problem = f"{key}={path} cannot be created: {existing} is a file"
        raise ConfigError(f"{problem}; point {key} at a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}={path} is not writable ({err.strerror} in {existing}); "
            f"point {key} at a folder you can write to"
        ) from None


class CheckOutputDir(Callback):
    """Hydra callback: the run (or sweep) folder can be created, checked before Hydra creates it
    — a failure there is otherwise a Hydra traceback before any ganforge code runs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        hydra_dir = config.hydra[mode]
        # Name what the user set: paths.log_dir (or GANFORGE_LOG_DIR) when the folder is under
        # it, else hydra.<mode>.dir itself.
        raw = str(hydra_dir._get_node("dir")._value())
        try:
            if "paths.log_dir" in raw and "paths" in config:
                check_writable("paths.log_dir", Path(str(config.paths.log_dir)))
            check_writable(f"hydra.{mode}.dir", Path(str(hydra_dir.dir)))
        except ConfigError as err:
            # Hydra has not set up logging yet: straight to stderr.
            print(f"ConfigError: {err}", file=sys.stderr)
            sys.exit(2)
