"""`ganforge-report PATH [PATH ...] [out=DIR] [metric=val/fid] [group_by=loss,...]`: what a sweep
found, as one table (printed, `report.md`, `report.json`) and one page (`index.html`), read from
the run directories alone.

`report(...)` is a plain function (usable from notebooks and tests); `main` parses `key=value`
arguments like the other commands and turns user errors into one line and exit code 2.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from ganforge.cli import check_writable, report_user_errors
from ganforge.errors import ConfigError, DataError
from ganforge.report import arguments
from ganforge.report.collect import (
    Run,
    find_runs,
    format_duration,
    read_runs,
    stopped_before_training,
)
from ganforge.report.page import eval_lines, eval_text, write_page
from ganforge.report.sweep import OptunaSweep, optuna_sweeps
from ganforge.report.table import (
    Table,
    build_table,
    check_ranking,
    fmt,
    fmt_stat,
    format_value,
    group_n_text,
    health_text,
    markdown_table,
    status_text,
)

log = logging.getLogger("ganforge")

USAGE = """usage: ganforge-report PATH [PATH ...] [key=value ...]

PATH: a run directory, a multirun directory, or any folder holding them (runs are found by
their config_resolved.yaml or .hydra/overrides.yaml).

  out=DIR            where report.md, report.json, index.html and its PNGs go
                     (default: PATH/report for one PATH, ./report for several)
  metric=NAME        the metric to compare, e.g. val/fid (default: the runs' `objective`,
                     else val/fid, val/reverse_kl or val/kid, whichever was logged)
  group_by=K1,K2     settings that define a group (default: every differing setting but seed)
  direction=D        minimize | maximize (default: objective_direction for the runs' objective,
                     else the metric registry's direction (metrics/registry.py), else minimize)
  rank_by=final|best rank groups by their runs' final (default) or best value
  stale_after=SEC    an unfinished run silent this long counts as stopped, not running (600)
"""
MAX_CONSOLE_SETTINGS = 6
OPTIONS = ("out", "metric", "group_by", "direction", "rank_by", "stale_after")


@dataclass
class Options:
    paths: list[Path]
    out: Path | None = None
    metric: str | None = None
    group_by: list[str] | None = None
    direction: str | None = None
    rank_by: str = "final"
    stale_after: float = 600.0


def parse_args(argv: list[str]) -> Options:
    args = arguments.split(argv, OPTIONS, "ganforge-report PATH [key=value ...]", paths=True)
    if not args.others:
        raise ConfigError(
            "no PATH given: ganforge-report PATH [PATH ...], e.g. "
            "ganforge-report outputs/train/multiruns/<time>"
        )
    values = args.values
    return Options(
        paths=[Path(p) for p in args.others],
        out=Path(values["out"]) if "out" in values else None,
        metric=values.get("metric") or None,
        group_by=arguments.names(values["group_by"]) if values.get("group_by") else None,
        direction=values.get("direction") or None,
        rank_by=values.get("rank_by", "final"),
        stale_after=arguments.positive_number("stale_after", values["stale_after"], "seconds")
        if "stale_after" in values
        else 600.0,
    )


def _check(opts: Options) -> None:
    """The options' own values, before any run is read."""
    check_ranking(opts.direction, opts.rank_by)
    if not opts.stale_after > 0:  # Options built in code, not parsed
        raise ConfigError(f"stale_after={opts.stale_after} must be a positive number of seconds")


@dataclass
class Report:
    out: Path
    runs: list[Run]
    table: Table
    sweeps: list[OptunaSweep]
    files: list[str]


def report(opts: Options) -> Report:
    """Read the runs, build the table and write `report.md`, `report.json` and `index.html`."""
    _check(opts)
    dirs = find_runs(opts.paths)
    out = opts.out or (opts.paths[0] / "report" if len(opts.paths) == 1 else Path("report"))
    # Checked before the runs are read (checkpoints included): a bad out= costs nothing.
    check_writable("out", out)
    out.mkdir(parents=True, exist_ok=True)
    runs = read_runs(dirs, stale_after=opts.stale_after)
    skipped = [r for r in runs if stopped_before_training(r)]
    runs = [r for r in runs if r not in skipped]
    for run in skipped:
        log.warning("skipped %s: it stopped before training (%s), not a run", run.path, run.error)
    if not runs:
        raise DataError(
            f"no runs under {' '.join(str(p) for p in opts.paths)}: the {len(skipped)} run "
            "folder(s) there stopped before training on a user error (see the lines above); "
            "fix the command and train again"
        )
    table = build_table(runs, opts.metric, opts.group_by, opts.direction, opts.rank_by)
    sweeps = optuna_sweeps(runs)
    generated = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    sources = [str(p) for p in opts.paths]
    data = to_json(table, sweeps, sources, generated)
    (out / "report.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(to_markdown(table, sweeps, sources, generated))
    files = ["report.json", "report.md", *write_page(out, table, sweeps, sources, generated)]
    return Report(out, runs, table, sweeps, files)


# --- json -----------------------------------------------------------------------------------------
def _num(value: float | None) -> float | str | None:
    """JSON has no inf/NaN: they are written as the strings "inf", "-inf", "nan"."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def to_json(
    table: Table, sweeps: list[OptunaSweep], sources: list[str], generated: str
) -> dict[str, Any]:
    rows = []
    for r in table.rows:
        run = r.run
        rows.append(
            {
                "run": run.name,
                "path": str(run.path),
                "settings": {k: _plain(r.settings.get(k)) for k in table.columns},
                "status": run.status,
                "error": run.error,
                "iterations": run.iterations,
                "max_iters": run.max_iters,
                "wall_s": run.wall_s,
                "it_per_s": run.it_per_s,
                "final": _num(r.final),
                "final_iter": r.final_iter,
                "best": _num(r.best),
                "best_iter": r.best_iter,
                "at_best": {k: _num(v) for k, v in r.at_best.items()},
                "evals": [
                    {**e, "metrics": {k: _num(v) for k, v in e["metrics"].items()}}
                    for e in run.evals
                ],
                "health": _plain(run.health),
                "last_sample": str(run.samples[-1]) if run.samples else None,
                "notes": run.notes,
            }
        )
    groups = [
        {
            "rank": g.rank,
            "best": g.is_best,
            "label": g.label,
            "settings": {k: _plain(v) for k, v in g.key},
            "runs": [r.run.name for r in g.rows],
            "final": {"n": g.final.n, "mean": _num(g.final.mean), "std": _num(g.final.std)},
            "best_value": {"n": g.best.n, "mean": _num(g.best.mean), "std": _num(g.best.std)},
        }
        for g in table.groups
    ]
    return {
        "generated": generated,
        "sources": sources,
        "metric": table.metric,
        "direction": table.direction,
        "rank_by": table.rank_by,
        "columns": table.columns,
        "group_by": table.group_by,
        "runs": rows,
        "groups": groups,
        "notes": table.notes,
        "optuna": [
            {
                "directory": str(s.directory),
                "objective": s.objective,
                "direction": s.direction,
                "source": s.source,
                "results": _plain(s.results),
                "trials": [
                    {
                        "number": t.number,
                        "state": t.state,
                        "value": _num(t.value),
                        "params": {k: _plain(v) for k, v in t.params.items()},
                        "run": t.run,
                    }
                    for t in s.trials
                ],
                "best_so_far": [_num(b) for b in s.best_so_far()],
                "importances": _plain(s.importances),
                "importance_note": s.importance_note,
                "notes": s.notes,
            }
            for s in sweeps
        ],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- markdown and console -------------------------------------------------------------------------
def group_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    m = table.metric
    head = ["rank", "group", "n", f"final {m}", f"best {m}", "runs"]
    rows = []
    for g in table.groups:
        rows.append(
            [
                ("★ " if g.is_best else "") + (str(g.rank) if g.rank else "—"),
                g.label,
                group_n_text(g),
                fmt_stat(g.final),
                fmt_stat(g.best),
                ", ".join(r.run.name for r in g.rows),
            ]
        )
    return head, rows


def run_rows(table: Table, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The runs table; `compact` (the console) leaves the errors, the other metrics at the best
    iteration, ganforge-eval and health to the lines below it and to report.md / the page."""
    m = table.metric
    others = [] if compact else sorted({k for r in table.rows for k in r.at_best})
    head = ["run", *table.columns, "status", "iterations", "wall time", "it/s"]
    if m:
        head += [f"final {m}", f"best {m}", "at iter", *[f"{o} at best" for o in others]]
    show_eval = not compact and any(r.run.evals for r in table.rows)
    show_health = not compact and any(r.run.health is not None for r in table.rows)
    head += ["ganforge-eval"] * show_eval + ["health"] * show_health
    rows = []
    for r in table.rows:
        run = r.run
        status = status_text(run)
        if not compact:
            status += "".join(f": {text}" for text in [run.error] if text)
            status += "".join(f" ({note})" for note in run.notes)
        row = [run.name, *[format_value(r.settings.get(c)) for c in table.columns], status]
        row += [
            str(run.iterations),
            format_duration(run.wall_s) if run.wall_s else "—",
            fmt(run.it_per_s),
        ]
        if m:
            best_iter = str(r.best_iter) if r.best_iter is not None else "—"
            row += [fmt(r.final), fmt(r.best), best_iter, *[fmt(r.at_best.get(o)) for o in others]]
        row += [eval_text(run.evals)] * show_eval + [health_text(run)] * show_health
        rows.append(row)
    return head, rows


def to_markdown(table: Table, sweeps: list[OptunaSweep], sources: list[str], generated: str) -> str:
    parts = [f"# ganforge report\n\n{', '.join(sources)} · {len(table.rows)} runs · {generated}\n"]
    if table.metric:
        parts.append(
            f"Metric `{table.metric}` ({table.direction}); groups ranked by the mean of each "
            f"run's {table.rank_by} value; ± is the sample standard deviation over seeds.\n"
        )
        parts.append("## Groups\n\n" + markdown_table(*group_rows(table)))
    if table.notes:
        parts.append("\n".join(f"- {n}" for n in table.notes) + "\n")
    parts.append("## Runs\n\n" + markdown_table(*run_rows(table)))
    parts.append(
        "Wall time: from `config_resolved.yaml` to the last write of `csv/metrics.csv` (setup "
        "and evaluations included); it/s: the iterations trained in that time.\n"
    )
    for s in sweeps:
        parts.append(f"## Optuna sweep {s.directory.name}\n\nTrials from {s.source}.\n")
        keys = sorted({k for t in s.trials for k in t.params})
        head = ["trial", "state", s.objective or "value", *keys, "best so far", "run"]
        rows = [
            [
                str(t.number),
                t.state,
                fmt(t.value),
                *[format_value(t.params.get(k)) for k in keys],
                fmt(b),
                t.run or "—",
            ]
            for t, b in zip(s.trials, s.best_so_far(), strict=True)
        ]
        parts.append(markdown_table(head, rows))
        if s.importances:
            parts.append(
                markdown_table(
                    ["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in s.importances.items()]
                )
            )
        parts.append(s.importance_note + "\n")
        parts.extend(f"- {n}\n" for n in s.notes)
    return "\n".join(parts)


def print_report(rep: Report, console: Console | None = None) -> None:
    if console is None:
        # Piped into a log file rich would wrap at 80 columns; tables read better wider.
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 160))
    table = rep.table
    if table.metric:
        head, rows = group_rows(table)
        rt = RichTable(title=f"groups by {table.metric} ({table.direction}, {table.rank_by})")
        for h in head:
            rt.add_column(h)
        for row in rows:
            rt.add_row(*map(Text, row), style="bold green" if row[0].startswith("★") else None)
        console.print(rt)
    head, rows = run_rows(table, compact=True)
    if len(table.columns) > MAX_CONSOLE_SETTINGS:
        # Dozens of differing settings (e.g. unrelated runs) make a table no one can read in a
        # terminal: the console names the runs' groups instead; report.md has every column.
        cut = slice(1, 1 + len(table.columns))
        label = {id(r): g.label for g in table.groups for r in g.rows}
        head[cut] = ["group"]
        for row, r in zip(rows, table.rows, strict=True):
            row[cut] = [label[id(r)]]
    rt = RichTable(title="runs")
    for h in head:
        rt.add_column(h)
    for row in rows:
        rt.add_row(*map(Text, row))  # Text: a `[csv,wandb]` in a note is not Rich markup
    console.print(rt)
    for run in rep.runs:
        if run.error:
            console.print(
                f"{run.name}: {status_text(run)}: {run.error}", highlight=False, markup=False
            )
        for note in run.notes:
            console.print(f"{run.name}: {note}", highlight=False, markup=False)
        if run.health:
            console.print(f"{run.name}: health: {health_text(run)}", highlight=False, markup=False)
        for line in eval_lines(run.evals):
            console.print(f"{run.name}: ganforge-eval {line}", highlight=False, markup=False)
    for note in table.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    for s in rep.sweeps:
        best = s.results.get("best_value") if s.results else None
        console.print(
            f"Optuna sweep {s.directory}: {len(s.trials)} trials, best {fmt(best)}; "
            f"{s.importance_note}",
            highlight=False,
            markup=False,
        )
    console.print(f"written to {rep.out / 'index.html'} (and report.md, report.json)", markup=False)


@report_user_errors
def _run(argv: list[str]) -> None:
    print_report(report(parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return
    # Warnings and errors only: optuna's storage layer (alembic) logs its setup at INFO.
    logging.basicConfig(level=logging.WARNING, format="[%(name)s][%(levelname)s] - %(message)s")
    _run(argv)


if __name__ == "__main__":
    main()
