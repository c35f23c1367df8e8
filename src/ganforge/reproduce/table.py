"""The table: per variant and metric, the paper's mean ± error beside the measured mean ± std
over seeds (ganforge-report's statistics and number format), the per-seed values, the
iterations and sample counts, whether the paper's mean lies within the measured mean ± 2 std, and
why a row is not comparable with the paper."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from typing import Any

import torch
from omegaconf import OmegaConf

from ganforge.report.table import Stat, fmt, fmt_stat, markdown_table, stat
from ganforge.reproduce.options import Options
from ganforge.reproduce.runs import SeedRun
from ganforge.reproduce.variants import Variant, paper_samples, protocol_of


def summarize(
    variants: list[Variant], jobs: list[SeedRun], iterations: dict[str, int], opts: Options
) -> dict[str, Any]:
    rows = []
    for variant in variants:
        runs = [j for j in jobs if j.variant is variant]
        done = [j for j in runs if j.result]
        paper_iters = OmegaConf.select(variant.cfg, "paper.iterations")
        protocol = protocol_of(variant.cfg) or {}
        # The paper's metrics first (measured or not), then what ganforge measured besides.
        measured = sorted({m for j in done for m in j.result["metrics"]} - set(variant.paper))
        names = [*variant.paper, *measured]
        for name in names:
            values = [
                (j.seed, j.result["metrics"][name]) for j in done if name in j.result["metrics"]
            ]
            samples = {j.result["n_samples"].get(name) for j in done if name in j.result["metrics"]}
            paper = variant.paper.get(name)
            rows.append(
                metric_row(
                    variant,
                    name,
                    values,
                    samples,
                    paper,
                    iterations[variant.name],
                    paper_iters,
                    protocol,
                )
            )
        for j in runs:
            if j.error:
                rows.append(
                    {"variant": variant.name, "metric": "-", "note": f"seed {j.seed}: {j.error}"}
                )
    return {
        "experiment": opts.experiment,
        "source": OmegaConf.select(variants[0].cfg, "paper.source"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "seeds": opts.seeds,
        "jobs": opts.jobs,
        "overrides": list(opts.overrides),
        "iterations": iterations,
        "rows": rows,
        "runs": [
            {
                "variant": j.variant.name,
                "seed": j.seed,
                "dir": str(j.run_dir),
                **j.result,
                "error": j.error,
            }
            for j in jobs
        ],
    }


def metric_row(
    variant: Variant,
    name: str,
    values: list[tuple[int, float]],
    samples: set[int | None],
    paper: dict[str, float] | None,
    iterations: int,
    paper_iters: int | None,
    protocol: dict[str, Any],
) -> dict[str, Any]:
    spread = stat([v for _, v in values])  # ganforge-report's mean ± std, inf and NaN alike
    n, mean, std = spread.n, spread.mean, spread.std
    notes = []
    within: bool | None = None
    if paper is None:
        notes.append("no paper number for this metric")
    elif not values:
        notes.append("not measured: ganforge does not compute this metric")
    else:
        if std is not None and mean is not None and math.isfinite(mean):
            within = abs(paper["mean"] - mean) <= 2 * std
        if paper_iters and iterations < paper_iters:
            notes.append(
                f"not comparable: {iterations:,} of the paper's {paper_iters:,} iterations"
            )
        want = paper_samples(protocol, name)
        if want and samples != {want}:
            notes.append(
                f"not comparable: {sorted(map(str, samples))} samples vs the paper's {want}"
            )
    if any(v == math.inf for _, v in values):
        notes.append("a seed has no high-quality sample (infinite reverse KL)")
    if any(math.isnan(v) for _, v in values):
        notes.append("a seed's value is NaN")
    return {
        "variant": variant.name,
        "metric": name,
        "paper_mean": paper["mean"] if paper else None,
        "paper_err": paper.get("err") if paper else None,
        "paper_iterations": paper_iters,
        "mean": mean,
        "std": std,
        "n": n,
        "per_seed": {str(s): v for s, v in values},
        "iterations": iterations,
        "n_samples": sorted(s for s in samples if s is not None),
        "paper_within_2std": within,
        "note": "; ".join(notes),
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"`ganforge-reproduce experiment={summary['experiment']}` — {summary['date']}, "
        f"{summary['machine']}, torch {summary['torch']}, {summary['seeds']} seeds, "
        f"jobs={summary['jobs']}"
        + (f", overrides {summary['overrides']}" if summary["overrides"] else ""),
        "",
        f"Paper: {summary['source'] or fmt(None)}. Within: the paper's mean lies within the "
        "measured mean ± 2 std over seeds.",
    ]
    head = ["variant", "metric", "paper", "measured mean ± std (n)", "per seed", "iterations",
            "samples", "within", "note"]  # fmt: skip
    rows = []
    for r in summary["rows"]:
        if r["metric"] == "-":
            rows.append([r["variant"], fmt(None), *[""] * 6, r["note"]])
            continue
        paper = (
            fmt(None)
            if r["paper_mean"] is None
            else f"{fmt(r['paper_mean'])} ± {fmt(r['paper_err'])}"
        )
        spread = Stat(r["n"], r["mean"], r["std"])
        measured = f"{fmt_stat(spread)} ({r['n']})" if r["n"] else fmt(None)
        seeds = ", ".join(f"{s}: {fmt(v)}" for s, v in r["per_seed"].items()) or fmt(None)
        within = {True: "yes", False: "no", None: fmt(None)}[r["paper_within_2std"]]
        samples = ", ".join(map(str, r["n_samples"])) or fmt(None)
        rows.append([r["variant"], r["metric"], paper, measured, seeds, f"{r['iterations']:,}",
                     samples, within, r["note"]])  # fmt: skip
    return "\n".join(lines) + "\n\n" + markdown_table(head, rows)
