"""The report page: `index.html` with its PNGs beside it, opened from disk with no server."""

from __future__ import annotations

import html
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ganforge.report.collect import Series, format_duration
from ganforge.report.sweep import OptunaSweep
from ganforge.report.table import (
    Group,
    Row,
    Table,
    better,
    fmt,
    fmt_stat,
    format_value,
    group_n_text,
    health_text,
    status_text,
)

COLORS = matplotlib.colormaps["tab10"].colors
LOSSES = ("train/d_loss", "train/g_loss")


def group_curve(series: list[Series]) -> tuple[list[int], list[float], list[float]]:
    """Mean and ± std across the group's runs at each iteration logged by any of them, over the
    runs that have a finite value there (inf, e.g. reverse KL with no mode captured, is left out:
    it cannot be drawn)."""
    by_iter: dict[int, list[float]] = {}
    for s in series:
        for it, v in s:
            if math.isfinite(v):
                by_iter.setdefault(it, []).append(v)
    its = sorted(by_iter)
    means = [statistics.fmean(by_iter[i]) for i in its]
    stds = [statistics.stdev(by_iter[i]) if len(by_iter[i]) > 1 else 0.0 for i in its]
    return its, means, stds


def plot_metric(table: Table, names: tuple[str, ...], path: Path) -> bool:
    """One panel per metric name: every group's mean (line) and seed spread (band), coloured as
    in the page's Groups table (which is the legend: labels can be long, and many)."""
    # A bare Figure, as ganforge's other plots: headless, and pyplot's backend is left alone.
    fig = Figure(figsize=(5.2 * len(names), 3.2))
    axes = fig.subplots(1, len(names), squeeze=False)
    drawn = False
    for ax, name in zip(axes[0], names, strict=True):
        non_finite, plotted = False, {}
        for i, group in enumerate(table.groups):
            series = [r.run.metrics[name] for r in group.rows if name in r.run.metrics]
            non_finite |= any(not math.isfinite(v) for s in series for _, v in s)
            its, means, stds = group_curve(series)
            if not its:
                continue
            color = group_color(i)
            marker = "o" if len(its) < 20 else None
            ax.plot(its, means, color=color, lw=1.5, marker=marker, ms=3)
            lo = [m - s for m, s in zip(means, stds, strict=True)]
            hi = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(its, lo, hi, color=color, alpha=0.2, lw=0)
            plotted[i] = [m + d for m, d in zip(means, stds, strict=True)] + [
                m - d for m, d in zip(means, stds, strict=True)
            ]
            drawn = True
        remarks = ["inf/NaN not drawn"] if non_finite else []
        off, spikes = _fit_scale(ax, plotted)
        if spikes:
            remarks.append("spikes cut")
        for k, g in enumerate(off):  # named by colour, as the groups table is the legend
            ax.text(
                0.01 + 0.2 * k,
                0.98,
                "↑ off scale",
                color=group_color(g),
                fontsize=8,
                transform=ax.transAxes,
                va="top",
            )
        ax.set_title(name + (f"  ({'; '.join(remarks)})" if remarks else ""), fontsize=10)
        ax.set_xlabel("GAN iteration")
        ax.grid(alpha=0.3)
    if not drawn:
        return False
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def group_color(i: int) -> tuple[float, float, float]:
    return COLORS[i % len(COLORS)]


def _fit_scale(ax: Any, curves: dict[int, list[float]]) -> tuple[list[int], bool]:
    """Fit the y-axis to the bulk of the curves (keyed by group index) when a diverged run would
    flatten every other curve to a line: groups sitting orders of magnitude above the others
    (losses of 1e29) are left off the scale, and lone spikes are cut. Returns the groups left off
    and whether spikes were cut, for the plot to say so."""
    medians = {g: statistics.median(abs(v) for v in c) for g, c in curves.items() if c}
    if not medians:
        return [], False
    ordered = sorted(medians.values())
    ref = ordered[(len(ordered) - 1) // 2]  # the lower median: with 2 groups, the smaller
    off = [g for g, m in medians.items() if m > 1e4 and m > 1e3 * max(ref, 1e-12)]
    inside = sorted(v for g, c in curves.items() if g not in off for v in c)
    if not inside:
        return [], False
    # Spikes: values over 1e3 times the 90th percentile of the magnitudes (and over 1e4).
    q = sorted(abs(v) for v in inside)[int(0.9 * (len(inside) - 1))]
    spikes = abs(inside[0]) > max(1e4, 1e3 * q) or abs(inside[-1]) > max(1e4, 1e3 * q)
    if spikes:
        inside = [v for v in inside if abs(v) <= 1e3 * q]
    if not (off or spikes):
        return [], False
    lo, hi = inside[0], inside[-1]
    pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    ax.set_ylim(lo - pad, hi + pad)
    return off, spikes


def plot_history(sweep: OptunaSweep, path: Path) -> None:
    numbers = [t.number for t in sweep.trials]
    values = [t.value for t in sweep.trials]
    best = sweep.best_so_far()
    finite = [
        (n, v) for n, v in zip(numbers, values, strict=True) if v is not None and math.isfinite(v)
    ]
    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.subplots()
    if finite:
        ax.scatter(*zip(*finite, strict=True), color=COLORS[0], label="trial value", zorder=3)
    steps = [
        (n, b) for n, b in zip(numbers, best, strict=True) if b is not None and math.isfinite(b)
    ]
    if steps:
        ax.step(*zip(*steps, strict=True), where="post", color=COLORS[3], label="best so far")
    n_bad = sum(1 for v in values if v is not None and not math.isfinite(v))
    title = f"{sweep.objective} ({sweep.direction})"
    if n_bad:
        title += f" — {n_bad} inf/NaN not drawn"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if finite or steps:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_importances(importances: dict[str, float], path: Path) -> None:
    names = list(importances)[::-1]
    fig = Figure(figsize=(5.6, 0.5 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color=COLORS[0])
    ax.set_title("parameter importances", fontsize=10)
    ax.set_xlabel("importance (Optuna)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --- html -----------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eaf7ea;font-weight:600}
.status-failed,.status-nan{color:#b00020} .status-running{color:#1a5fb4}
.status-stopped{color:#a05a00}
.err{color:#b00020;font-size:12px;min-width:260px;max-width:420px}
.notes li{margin:4px 0} .note{color:#666;font-size:12px;max-width:420px}
.grid{display:flex;flex-wrap:wrap;gap:16px} .grid figure{margin:0;text-align:center}
.grid img{width:300px;border:1px solid #ddd} figcaption{font-size:12px;color:#444;max-width:300px}
img.plot{max-width:100%;border:1px solid #eee;vertical-align:top}
.sw{display:inline-block;width:14px;height:14px;border-radius:3px}
.wide{overflow-x:auto} td.small{font-size:12px;white-space:nowrap}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def write_page(
    out: Path,
    table: Table,
    sweeps: list[OptunaSweep],
    sources: list[str],
    generated: str,
) -> list[str]:
    """Write `index.html` and its images into `out`; return the files written (relative)."""
    written: list[str] = []
    body: list[str] = [
        "<h1>ganforge report</h1>",
        f'<div class="meta">{_e(", ".join(sources))} · {len(table.rows)} runs · {_e(generated)}'
        f"</div>",
    ]
    if table.metric:
        body.append(
            f'<p class="meta">metric <b>{_e(table.metric)}</b> ({_e(table.direction)}); groups '
            f"ranked by the mean of each run's <b>{_e(table.rank_by)}</b> value; ± is the sample "
            "standard deviation over seeds</p>"
        )
    body += _groups_html(table)
    if table.notes:
        body.append(
            '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>"
        )
    body += _runs_html(table, out)

    plots = []
    val_names = sorted({m for r in table.rows for m in r.run.metrics if m.startswith("val/")})
    if table.metric in val_names:  # the chosen metric first
        val_names.remove(table.metric)
        val_names.insert(0, table.metric)
    for name in val_names:
        file = "plot_" + name.replace("/", "_") + ".png"
        if plot_metric(table, (name,), out / file):
            plots.append((name, file))
    losses = tuple(n for n in LOSSES if any(n in r.run.metrics for r in table.rows))
    if losses and plot_metric(table, losses, out / "plot_train_losses.png"):
        plots.append(("train losses", "plot_train_losses.png"))
    if plots:
        body.append("<h2>Metrics against GAN iterations</h2>")
        body.append(
            '<p class="meta">line: group mean over its runs at each logged iteration; '
            "band: ± one standard deviation over seeds</p>"
        )
        for name, file in plots:
            body.append(f'<img class="plot" src="{_e(file)}" alt="{_e(name)}">')
            written.append(file)

    body += _samples_html(table, out, written)
    for i, sweep in enumerate(sweeps):
        body += _sweep_html(sweep, out, i, written)

    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>ganforge report</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    (out / "index.html").write_text(page)
    written.append("index.html")
    return written


def _groups_html(table: Table) -> list[str]:
    """The ranked groups; the colour swatch is each group's colour in every plot."""
    m = _e(table.metric or "")
    head = "<tr><th></th><th>rank</th><th>group</th><th>n</th>"
    if table.metric:
        head += f"<th>final {m}</th><th>best {m}</th>"
    head += "<th>runs</th></tr>"
    rows = []
    for i, g in enumerate(table.groups):
        n = group_n_text(g)
        rank = ("★ " if g.is_best else "") + (str(g.rank) if g.rank else "—")
        runs = ", ".join(r.run.name for r in g.rows)
        swatch = f'<span class="sw" style="background:{to_hex(group_color(i))}"></span>'
        row = (
            f'<tr class="{"best" if g.is_best else ""}"><td>{swatch}</td><td>{rank}</td>'
            f'<td>{_e(g.label)}</td><td class="num">{_e(n)}</td>'
        )
        if table.metric:
            row += (
                f'<td class="num">{_e(fmt_stat(g.final))}</td>'
                f'<td class="num">{_e(fmt_stat(g.best))}</td>'
            )
        rows.append(row + f"<td>{_e(runs)}</td></tr>")
    return ["<h2>Groups</h2>", f'<div class="wide"><table>{head}{"".join(rows)}</table></div>']


def _runs_html(table: Table, out: Path) -> list[str]:
    m = table.metric
    others = sorted({k for r in table.rows for k in r.at_best})
    show_health = any(r.run.health is not None for r in table.rows)
    show_eval = any(r.run.evals for r in table.rows)
    head = ["run", *table.columns, "status", "iterations", "wall time", "it/s"]
    if m:
        short = m.removeprefix("val/")
        head += [f"final {short}", f"best {short}", "best at"]
        head += [f"{o.removeprefix('val/')} at best" for o in others]
    if show_eval:
        head.append("ganforge-eval")
    if show_health:
        head.append("health")
    cells = []
    for r in table.rows:
        run = r.run
        link = Path(_relpath(run.path, out))
        row = [f'<td><a href="{_e(link.as_posix())}/">{_e(run.name)}</a></td>']
        row += [f"<td>{_e(format_value(r.settings.get(c)))}</td>" for c in table.columns]
        status = _e(status_text(run))
        if run.error:
            status += f'<div class="err">{_e(run.error)}</div>'
        status += "".join(f'<div class="note">{_e(n)}</div>' for n in run.notes)
        row.append(f'<td class="status-{run.status}">{status}</td>')
        row.append(f'<td class="num">{run.iterations}</td>')
        row.append(f'<td class="num">{format_duration(run.wall_s) if run.wall_s else "—"}</td>')
        row.append(f'<td class="num">{fmt(run.it_per_s)}</td>')
        if m:
            row += [
                f'<td class="num">{fmt(r.final)}</td>',
                f'<td class="num">{fmt(r.best)}</td>',
                f'<td class="num">{r.best_iter if r.best_iter is not None else "—"}</td>',
            ]
            row += [f'<td class="num">{fmt(r.at_best.get(o))}</td>' for o in others]
        if show_eval:
            lines = "<br>".join(_e(t) for t in eval_lines(run.evals)) or "—"
            row.append(f'<td class="small">{lines}</td>')
        if show_health:
            row.append(f'<td class="small">{_e(health_text(run))}</td>')
        cells.append("<tr>" + "".join(row) + "</tr>")
    thead = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    return [
        "<h2>Runs</h2>",
        '<p class="meta">wall time: from config_resolved.yaml to the last write of '
        "csv/metrics.csv (setup and evaluations included); it/s: the iterations trained in that "
        "time</p>",
        f'<div class="wide"><table>{thead}{"".join(cells)}</table></div>',
    ]


def eval_lines(evals: list[dict[str, Any]]) -> list[str]:
    """One line per `ganforge-eval` report: `last.eval.json @400: fid 31.2, kid 0.012`."""
    lines = []
    for e in evals:
        vals = ", ".join(f"{k.split('/')[-1]} {fmt(v)}" for k, v in e["metrics"].items())
        lines.append(f"{Path(e['file']).name} @{e.get('iteration')}: {vals}")
    return lines


def eval_text(evals: list[dict[str, Any]]) -> str:
    return "; ".join(eval_lines(evals)) or "—"


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _samples_html(table: Table, out: Path, written: list[str]) -> list[str]:
    figures = []
    for i, group in enumerate(table.groups):
        pick = _representative(group, table.direction)
        if pick is None:
            continue
        run, image = pick
        file = f"samples_{i:02d}.png"
        shutil.copyfile(image, out / file)
        written.append(file)
        iteration = image.stem.removeprefix("iter_")
        it_text = f"iteration {int(iteration)}" if iteration.isdigit() else image.name
        caption = f"{group.label}: run {run.run.name}, {it_text}"
        figures.append(
            f'<figure><img src="{_e(file)}" alt="{_e(group.label)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    if not figures:
        return []
    return [
        "<h2>Last samples of each group</h2>",
        '<p class="meta">the newest sample grid (or 2-D scatter) of the group\'s best run by the '
        "metric (its first run when none has a value)</p>",
        f'<div class="grid">{"".join(figures)}</div>',
    ]


def _representative(group: Group, direction: str) -> tuple[Row, Path] | None:
    with_samples = [r for r in group.rows if r.run.samples]
    if not with_samples:
        return None
    pick = with_samples[0]
    for r in with_samples[1:]:
        if r.final is not None and (pick.final is None or better(r.final, pick.final, direction)):
            pick = r
    return pick, pick.run.samples[-1]


def _sweep_html(sweep: OptunaSweep, out: Path, i: int, written: list[str]) -> list[str]:
    body = [f"<h2>Optuna sweep: {_e(sweep.directory.name)}</h2>"]
    body.append(f'<p class="meta">trials from {_e(sweep.source)}</p>')
    if sweep.results:
        best = ", ".join(
            f"{k}={format_value(v)}" for k, v in sweep.results.get("best_params", {}).items()
        )
        body.append(
            f"<p>Optuna's best: <b>{_e(fmt(sweep.results.get('best_value')))}</b> "
            f"with {_e(best)}</p>"
        )
    hist = f"optuna_history_{i}.png"
    plot_history(sweep, out / hist)
    written.append(hist)
    body.append(f'<img class="plot" src="{_e(hist)}" alt="optimisation history">')
    if sweep.importances:
        imp = f"optuna_importances_{i}.png"
        plot_importances(sweep.importances, out / imp)
        written.append(imp)
        body.append(f'<img class="plot" src="{_e(imp)}" alt="parameter importances">')
    body.append(f'<p class="meta">{_e(sweep.importance_note)}</p>')
    keys = sorted({k for t in sweep.trials for k in t.params})
    names = ["trial", "state", sweep.objective or "value", "best so far", *keys, "run"]
    head = "".join(f"<th>{_e(h)}</th>" for h in names)
    rows = []
    for t, best in zip(sweep.trials, sweep.best_so_far(), strict=True):
        cells = [
            str(t.number),
            t.state,
            fmt(t.value),
            fmt(best),
            *[format_value(t.params.get(k)) for k in keys],
            t.run or "—",
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    body.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    if sweep.notes:
        body.append(
            '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in sweep.notes) + "</ul>"
        )
    return body
