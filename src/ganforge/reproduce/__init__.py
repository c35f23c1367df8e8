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
Stopping it (Ctrl-C, `kill`, a closed terminal) stops its training processes, each after
saving a checkpoint, and the same command resumes them; a run directory another harness is
using is refused.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from ganforge.errors import ConfigError, GanforgeError
from ganforge.reproduce.evaluate import evaluate_run
from ganforge.reproduce.extend import check_extendable, plan_extension
from ganforge.reproduce.options import Options, parse_args
from ganforge.reproduce.processes import Children, Stopped, stop_on_signals
from ganforge.reproduce.runs import (
    SeedRun,
    resume_point,
    run_all,
    run_dir,
)
from ganforge.reproduce.table import markdown, metric_row, summarize
from ganforge.reproduce.variants import (
    Variant,
    compose_variants,
    paper_samples,
    presets,
    protocol_of,
)

__all__ = [
    "Options",
    "Variant",
    "compose_variants",
    "evaluate_run",
    "main",
    "markdown",
    "metric_row",
    "paper_samples",
    "parse_args",
    "presets",
    "protocol_of",
    "reproduce",
    "resume_point",
]

log = logging.getLogger("ganforge")


def reproduce(opts: Options, children: Children | None = None) -> dict[str, Any]:
    """Run (or resume) every variant x seed, evaluate, write and return the summary. Whatever
    ends it early (an exception, or a signal raised as one, see `main`) stops the training
    processes first (`runs.run_all`)."""
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
    run_all(opts, jobs, iterations, threads, protocols, children or Children())
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
    previous = stop_on_signals(children)
    try:
        opts = parse_args(args)
        summary = reproduce(opts, children)
    except Stopped as stop:
        log.error(
            "ganforge-reproduce stopped by %s: stopped its %d training process(es) (each saved "
            "a checkpoint when it could); run the same command again to resume",
            stop,
            children.stopped,
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


if __name__ == "__main__":
    main()
