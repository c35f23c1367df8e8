"""`key=value` command lines of the commands that are not Hydra apps (`ganforge-report`,
`ganforge-reproduce`): one splitter and the value readers, so both accept `--key=value` alike and
word their mistakes alike. Each command keeps its own Options; the text-to-value rules live here.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ganforge.errors import ConfigError
from ganforge.overrides import normalize


@dataclass
class Arguments:
    values: dict[str, str] = field(default_factory=dict)  # the command's own options
    others: list[str] = field(default_factory=list)  # paths, or overrides passed on


def split(
    argv: Sequence[str],
    options: Sequence[str],
    command: str,
    *,
    paths: bool = False,
    reserved: Sequence[str] = (),
    reserved_hint: str = "",
) -> Arguments:
    """Sort `argv` into the command's `options` and the rest.

    `paths=True` (ganforge-report): an argument without `=`, or naming a file that exists, is a
    path; an unknown `key=value` is an error with the closest option. Otherwise
    (ganforge-reproduce) every argument is `key=value`, unknown keys are passed on (ganforge-train
    checks them against its config), and `reserved` keys are refused with `reserved_hint`."""
    # `--key=value`, as argparse (or a W&B Sweeps agent) writes it; a path is never rewritten.
    argv = [a if paths and Path(a).exists() else normalize([a])[0] for a in argv]
    args = Arguments()
    for arg in argv:
        key, eq, value = arg.partition("=")
        if paths and (not eq or Path(arg).exists()):
            args.others.append(arg)
        elif not eq:
            raise ConfigError(f"argument {arg!r} is not key=value; e.g. {command}")
        elif key in options:
            args.values[key] = value
        elif key.lstrip("+~") in reserved:
            raise ConfigError(f"{key} is set by {command.split()[0]} for each run; {reserved_hint}")
        elif paths:
            near = difflib.get_close_matches(key, options, n=1)
            hint = f"did you mean {near[0]}={value}? " if near else ""
            raise ConfigError(
                f"{arg}: unknown option {key!r}; {hint}the options are {', '.join(options)} "
                f"({command.split()[0]} --help)"
            )
        else:
            args.others.append(arg)
    return args


def positive_int(key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    # Not errors.check_int: this reads command-line text ("3", not 3), so it must parse first and
    # refuse what int() would round or accept loosely ("3.0" fails, " 3", "+3" pass).
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise ConfigError(f"{key}={text} must be a positive integer, e.g. {key}=3")
    return value


def positive_number(key: str, text: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ConfigError(f"{key}={text} must be a positive number of {unit}")
    return value


def flag(key: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ConfigError(f"{key}={text} must be true or false")
    return text.lower() == "true"


def names(text: str) -> list[str]:
    """`a,b` or `[a, b]` -> ["a", "b"]."""
    return [n.strip() for n in text.strip("[]").split(",") if n.strip()]
