"""extend=true: a run that has not started continues the same variant and seed's longest shorter
run from its checkpoint, which is the longer run itself only with exact resume, no schedule tied
to the run's length and the same settings; anything else is refused before any training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ganforge.compile import check_mode
from ganforge.errors import ConfigError
from ganforge.report.table import flat
from ganforge.reproduce.options import Options
from ganforge.reproduce.runs import RESULT_FILE, SeedRun, newest_checkpoint, resume_point
from ganforge.reproduce.variants import Variant
from ganforge.schedules import tied_to_run_length

log = logging.getLogger("ganforge")


def shorter_run_point(opts: Options, variant: Variant, iterations: int, seed: int) -> Path | None:
    """For extend=true: the newest readable checkpoint of this variant and seed's longest run
    shorter than `iterations` (under the same `out`), or None."""
    found: list[tuple[int, Path]] = []
    for folder in (opts.out / opts.experiment / variant.name).glob(f"iters_*/seed_{seed}"):
        length = folder.parent.name.removeprefix("iters_")
        if length.isdigit() and int(length) < iterations:
            newest = newest_checkpoint(folder)
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
