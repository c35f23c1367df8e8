"""The `ganforge-train` processes of one harness: started, stopped together, and the lock that
keeps a second harness out of their run directories."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganforge.errors import GanforgeError

log = logging.getLogger("ganforge")

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
        self.stopped = 0  # how many stop() found running
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
        self.stopped += len(procs)
        return len(procs)


def stop_on_signals(children: Children) -> dict[int, Any]:
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
            host = holder.get("host")
            if host not in (None, socket.gethostname()):
                # Another machine's processes cannot be asked (a folder shared between hosts).
                raise GanforgeError(
                    f"{folder} is locked by a ganforge-reproduce on {host} ({path}); if nothing "
                    f"runs there any more, delete {path} and run this command again"
                ) from None
            alive = [pid for pid, started in _processes(holder) if _alive(pid, started)]
            if alive:
                raise GanforgeError(
                    f"{folder} is in use by another ganforge-reproduce or its training (pid "
                    f"{', '.join(map(str, alive))}, see {path}); wait for it to finish or stop "
                    f"it (kill {alive[0]}), then run this command again to resume"
                ) from None
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
    if _processes(_read_lock(lock))[:1] == [(os.getpid(), _start_time(os.getpid()))]:
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


def _processes(holder: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The lock's (pid, start time) pairs, harness first; none from a damaged lock."""
    listed = holder.get("processes")
    pairs = listed if isinstance(listed, list) else []
    return [tuple(p) for p in pairs if isinstance(p, list) and len(p) == 2]  # type: ignore[misc]


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
