"""Run `ganforge-train`'s console entry point once per case, in this one process.

    python tests/bad_inputs_driver.py CASES.json RESULTS.json

CASES.json is a list of {"id", "argv", "env", "hide"}: the command-line arguments, environment
changes for the case (a value, or null to unset), and modules to make unimportable (as on a
machine without that package). RESULTS.json maps each id to {"code", "output"}: the exit code and
everything the case printed. Cases run in order, each with a fresh Hydra and the environment
restored afterwards; an exception escaping the entry point is recorded with its traceback, as
Python would print it.

Used by test_bad_inputs_train.py: importing torch and Lightning takes seconds, and the cases
themselves (each stopped before training) take a fraction of that.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from hydra.core.global_hydra import GlobalHydra

from ganforge.train import main


class _Hide(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages unimportable, as if not installed."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _environment(changes: dict[str, str | None]) -> Iterator[None]:
    saved = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    out = io.StringIO()
    code: int | str | None = 0
    hide = _Hide(case.get("hide", []))
    sys.meta_path.insert(0, hide)
    sys.argv = ["ganforge-train", *case["argv"]]
    try:
        with (
            _environment(case.get("env", {})),
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
    return {"code": code if isinstance(code, int) else 1, "output": out.getvalue()}


if __name__ == "__main__":
    cases_file, results_file = sys.argv[1:3]  # read first: each case replaces sys.argv
    with open(cases_file) as f:
        cases = json.load(f)
    results = {case["id"]: run_case(case) for case in cases}
    with open(results_file, "w") as f:
        json.dump(results, f)
