"""Run ganforge's console entry points (train, eval, sample) once per case, in this one process.

    python tests/commands_driver.py CASES.json RESULTS.json

CASES.json is a list of {"id", "command", "argv", "env", "cwd", "hide"}: the console command
(`ganforge-train`, the default, `ganforge-eval` or `ganforge-sample`), its command-line arguments,
environment changes for the case (a value, or null to unset), the folder it runs in (default: the
driver's own) and top-level packages to make unimportable (as on a machine without them, e.g.
`tensorboard`). RESULTS.json maps each id to {"code", "output"}: the exit code and everything
the case printed. Cases run in order, each with a fresh Hydra, its own working folder and the
environment restored afterwards; an exception escaping the entry point is recorded with its
traceback, as Python would print it.

Used by test_bad_inputs.py and test_bad_inputs_train.py: importing torch and Lightning takes
seconds per process, the cases themselves (each stopped before any work) a fraction of that.
The environment is applied per case, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` reaches every
`torch.load` of that case as it would in a fresh process (torch reads it at each call).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import io
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from hydra.core.global_hydra import GlobalHydra

ENTRY_POINTS = {
    "ganforge-train": "ganforge.train",
    "ganforge-eval": "ganforge.eval",
    "ganforge-sample": "ganforge.sample",
}


class _Hide(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages unimportable, as if not installed."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _environment(changes: dict[str, str | None], cwd: str) -> Iterator[None]:
    saved, here = dict(os.environ), os.getcwd()
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    out = io.StringIO()
    code: int | str | None = 0
    command = case.get("command", "ganforge-train")
    main = importlib.import_module(ENTRY_POINTS[command]).main
    hide = _Hide(case.get("hide", []))
    sys.meta_path.insert(0, hide)
    sys.argv = [command, *case["argv"]]
    try:
        with (
            _environment(case.get("env", {}), case.get("cwd", os.getcwd())),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code
            except BaseException:
                out.write(traceback.format_exc())
                code = 1
    finally:
        sys.meta_path.remove(hide)
        GlobalHydra.instance().clear()
    # sys.exit(None) is a success, sys.exit("message") a failure with status 1.
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return {"code": status, "output": out.getvalue()}


if __name__ == "__main__":
    cases_path, results_path = sys.argv[1:3]  # before run_case replaces sys.argv
    with open(cases_path) as f:
        cases = json.load(f)
    results = {case["id"]: run_case(case) for case in cases}
    with open(results_path, "w") as f:
        json.dump(results, f)
