"""The command line: `key=value` arguments (read by `ganforge.report.arguments`, as
ganforge-report's are) into Options; the keys ganforge-reproduce keeps for itself."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ganforge.cli import check_writable
from ganforge.errors import ConfigError
from ganforge.report import arguments
from ganforge.reproduce.variants import presets

EXAMPLE = "ganforge-reproduce experiment=pacgan_grid seeds=3 budget=5000"
# Keys of the command itself; everything else goes to ganforge-train.
OWN_KEYS = ("experiment", "seeds", "budget", "jobs", "variant", "out", "threads", "extend")
# Set by the harness for each run: a user override of these would break the stable run
# directories or the table's bookkeeping.
RESERVED = ("seed", "train.max_iters", "hydra.run.dir", "ckpt_path", "resume", "num_threads")


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


def parse_args(argv: Sequence[str]) -> Options:
    """`key=value` arguments -> Options; a ConfigError naming the argument on a bad one."""
    args = arguments.split(
        argv,
        OWN_KEYS,
        EXAMPLE,
        reserved=RESERVED,
        reserved_hint="use seeds=N (seeds 0..N-1), budget=ITERATIONS and threads=T instead, and "
        "run the command again to resume",
    )
    own = args.values
    if not own.get("experiment"):
        raise ConfigError(
            "experiment=NAME is required, e.g. ganforge-reproduce experiment=pacgan_grid "
            f"seeds=3; presets: {', '.join(presets())}"
        )
    if "out" in own:
        check_writable("out", own["out"])
    positive = arguments.positive_int
    return Options(
        experiment=own["experiment"],
        seeds=positive("seeds", own.get("seeds", "3")),
        budget=positive("budget", own["budget"]) if "budget" in own else None,
        jobs=positive("jobs", own.get("jobs", "1")),
        variants=tuple(arguments.names(own.get("variant", ""))),
        out=Path(
            own.get("out") or Path(os.environ.get("GANFORGE_LOG_DIR", "outputs")) / "reproduce"
        ),
        threads=positive("threads", own["threads"]) if "threads" in own else None,
        overrides=tuple(args.others),
        extend=arguments.flag("extend", own.get("extend", "false")),
    )
