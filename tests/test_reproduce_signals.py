"""`ganforge-reproduce` stopped by a signal stops its `ganforge-train` children (none trains on
into a rerun's directory), and a run directory is used by one harness at a time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganforge.errors import GanforgeError
from ganforge.reproduce import main
from ganforge.reproduce.processes import (
    LOCK_FILE,
    Children,
    _start_time,
    claim,
    note_child,
    release,
)
from test_reproduce import QUIET
from test_reproduce import TINY as SMALL

# test_reproduce's tiny networks and data, without sample grids or plots.
TINY = [*SMALL, *(o for o in QUIET if o not in SMALL)]
# Up (its SIGTERM handler set, if any) once it printed its line; "deaf" ignores SIGTERM.
SLEEPER = """import signal, sys, time
if "deaf" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(120)"""


def sleeper(*argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, *argv], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"  # handler installed
    return proc


def training_processes(folder: Path) -> list[int]:
    """Live (not zombie) ganforge-train processes writing under `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "ganforge.train" in command and str(folder) in command and state != "Z":
            found.append(int(proc.name))
    return found


# --- the children ---------------------------------------------------------------------------------
def test_stop_terminates_children_and_kills_one_that_ignores_sigterm() -> None:
    children = Children(grace_s=1.0)
    procs: list[subprocess.Popen[str]] = []

    def start(*argv: str) -> None:  # as run() would, without a worker thread
        proc = sleeper(*argv)
        procs.append(proc)
        children._running.add(proc)  # type: ignore[arg-type]

    start()
    start("deaf")
    assert children.stop() == 2
    assert procs[0].returncode == -signal.SIGTERM  # stopped the polite way
    assert procs[1].returncode == -signal.SIGKILL  # ignored SIGTERM: killed after the grace
    assert children.run([sys.executable, "-c", "print(1)"]) is None  # nothing new starts


# --- the lock -------------------------------------------------------------------------------------
def lock_of(*pids: int, start: int | None = None) -> str:
    """A lock as a harness writes it: its pid (and its child's) with their start times."""
    processes = [[pid, start if start is not None else _start_time(pid)] for pid in pids]
    return json.dumps({"host": socket.gethostname(), "processes": processes})


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path: Path) -> None:
    lock = claim(tmp_path / "run")
    assert json.loads(lock.read_text())["processes"][0][0] == os.getpid()
    with pytest.raises(GanforgeError, match=rf"in use by .*pid {os.getpid()}.*run this command"):
        claim(tmp_path / "run")

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(gone.stdout)
    # A harness killed with SIGKILL: its pid is gone but its training child lives on.
    child = sleeper()
    try:
        lock.write_text(lock_of(dead, child.pid))
        with pytest.raises(GanforgeError, match=rf"pid {child.pid}\b.*kill {child.pid}\b"):
            claim(tmp_path / "run")
        # The same pid, started at another time: reused by another process, not the lock's.
        lock.write_text(lock_of(dead, child.pid, start=1))
        assert claim(tmp_path / "run") == lock
    finally:
        child.kill()
        child.wait()
    assert json.loads(lock.read_text())["processes"] == [[os.getpid(), _start_time(os.getpid())]]
    note_child(lock, 12345)
    assert [p for p, _ in json.loads(lock.read_text())["processes"]] == [os.getpid(), 12345]
    release(lock)
    assert not lock.exists()
    lock.write_text(lock_of(dead))
    assert claim(tmp_path / "run") == lock  # every process of the lock gone: taken over
    for damaged in ("{not json", '{"processes": [1, 2]}', "[]", ""):
        lock.write_text(damaged)
        assert claim(tmp_path / "run") == lock  # half written or damaged: nobody's
    # Another machine's processes cannot be asked: its lock is left to the user.
    lock.write_text(json.dumps({"host": "elsewhere", "processes": [[dead, None]]}))
    with pytest.raises(GanforgeError, match=r"locked by a ganforge-reproduce on elsewhere.*delete"):
        claim(tmp_path / "run")


def test_rerun_into_a_directory_in_use_exits_2_before_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed1 = tmp_path / "toy_ring" / "preset" / "iters_50" / "seed_1"
    seed1.mkdir(parents=True)
    holder = sleeper()
    try:
        (seed1 / LOCK_FILE).write_text(lock_of(holder.pid))
        with pytest.raises(SystemExit) as exit_info:
            main(["experiment=toy_ring", "seeds=2", "budget=50", f"out={tmp_path}", *TINY])
    finally:
        holder.kill()
        holder.wait()
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "in use by another ganforge-reproduce" in errors[0], errors
    assert f"pid {holder.pid}" in errors[0]
    assert not list(tmp_path.rglob("train.log"))  # nothing trained, seed 0 neither
    assert not (seed1.parent / "seed_0" / LOCK_FILE).exists()  # its claim was not kept


# --- end to end: a harness stopped by a signal ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stopped_harness_leaves_no_training_behind(tmp_path: Path, signum: int) -> None:
    budget = 3000
    args = ["experiment=pacgan_ring", "variant=GAN", "seeds=2", "jobs=2", f"budget={budget}",
            "threads=1", f"out={tmp_path}", *TINY]  # fmt: skip
    command = [sys.executable, "-m", "ganforge.reproduce", *args]
    seeds = tmp_path / "pacgan_ring" / "GAN" / f"iters_{budget}"
    harness = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # Both children training (their CSV logged a row), so each has its SIGTERM handler.
        while not all((seeds / f"seed_{k}" / "csv" / "metrics.csv").is_file() for k in (0, 1)):
            assert harness.poll() is None, harness.stderr.read() if harness.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert len(training_processes(tmp_path)) == 2
        harness.send_signal(signum)  # the harness alone, as `kill PID` does
        _, stderr = harness.communicate(timeout=120)
    finally:
        if harness.poll() is None:
            harness.kill()
        for pid in training_processes(tmp_path):
            os.kill(pid, signal.SIGKILL)
    assert harness.returncode == 128 + signum, stderr[-2000:]
    assert training_processes(tmp_path) == []  # waited for: none left running
    name = signal.Signals(signum).name
    said = re.findall(rf"stopped by {name}: stopped its 2 training process\(es\).*resume", stderr)
    assert len(said) == 1, stderr[-2000:]
    assert not list(tmp_path.rglob(LOCK_FILE))  # released on the way out
    assert not list(tmp_path.rglob("reproduce_result.json"))  # nothing counted as finished
    if signum != signal.SIGTERM:
        return
    # The rerun resumes each seed from the checkpoint it saved when stopped, and finishes.
    for k in (0, 1):
        assert (seeds / f"seed_{k}" / "checkpoints" / "last.ckpt").is_file()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for k in (0, 1):
        log = (seeds / f"seed_{k}" / "train.log").read_text()
        commands = [line for line in log.splitlines() if line.startswith("$ ")]
        assert len(commands) == 2 and "ckpt_path=" in commands[1], commands
        result = json.loads((seeds / f"seed_{k}" / "reproduce_result.json").read_text())
        assert result["resumed"] is True and result["iterations"] == budget
