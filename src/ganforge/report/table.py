"""From runs to the comparison: the settings that differ, one row per run, seed-only differences
folded into groups with mean ± std, groups ranked, overlaps flagged."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import yaml

from ganforge.errors import ConfigError
from ganforge.metrics import registry
from ganforge.report.collect import Run, Series

# A metric's direction and the default metric come from the metric registry
# (`registry.direction`, `registry.default_keys`); `direction=` on the command line, or the runs'
# `objective_direction` for their `objective`, takes precedence; anything the registry does not
# log (losses) is minimised.
SEED = "seed"
# Subtrees of the resolved config that repeat other keys (`system.*` wires `model`, `loss`,
# `optim` together) or name places and plumbing rather than the experiment.
DERIVED = (
    "paths.",
    "hydra.",
    "system.",
    "model.generator.",
    "model.discriminator.",
    "optim.generator.",
    "optim.discriminator.",
    "callbacks.",
    "logger.",
    "trainer.default_root_dir",
)


@dataclass
class Row:
    """One run's line in the table."""

    run: Run
    settings: dict[str, Any]
    final: float | None = None
    final_iter: int | None = None
    best: float | None = None
    best_iter: int | None = None
    at_best: dict[str, float] = field(default_factory=dict)  # other val/* at best_iter


@dataclass
class Stat:
    n: int
    mean: float | None
    std: float | None  # sample std (n - 1); None for n < 2


@dataclass
class Group:
    label: str
    key: tuple[tuple[str, Any], ...]
    rows: list[Row]
    final: Stat
    best: Stat
    rank: int | None = None
    is_best: bool = False

    @property
    def not_counted(self) -> list[Row]:
        """Rows without a value (failed early, or not evaluated yet)."""
        return [r for r in self.rows if r.final is None]


@dataclass
class Table:
    metric: str | None
    direction: str
    rank_by: str
    columns: list[str]  # the differing settings
    group_by: list[str]
    rows: list[Row]
    groups: list[Group]
    notes: list[str]


# --- settings -------------------------------------------------------------------------------------
def override_keys(runs: list[Run]) -> list[str]:
    """Every key typed on a command line (or set by a sweeper) in any run, in first-seen order;
    Hydra's own `hydra.*` / `hydra/...` settings are not the experiment's."""
    keys: list[str] = []
    for run in runs:
        for override in run.overrides or []:
            key = override.split("=", 1)[0].lstrip("+~")
            if key.startswith(("hydra.", "hydra/")) or key == "hydra" or key in keys:
                continue
            keys.append(key)
    return keys


def setting(run: Run, key: str) -> Any:
    """The value `key` had in `run`: a config group's choice (`loss` -> `hinge`), else the
    resolved config's value, else what the override said (a job that failed before resolving)."""
    if key in run.choices:
        return run.choices[key]
    node: Any = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            node = _MISSING
            break
        node = node[part]
    # A string with `${` is Hydra's unresolved copy (the job failed before resolving): the
    # override, if any, is the better record.
    unresolved = isinstance(node, str) and "${" in node
    if node is not _MISSING and not unresolved and not isinstance(node, dict | list):
        return node
    for override in reversed(run.overrides or []):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return _parse(value)
    return None if node is _MISSING else _compact(node)


_MISSING = object()


def _parse(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _compact(value: Any) -> Any:
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return value


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = _compact(v)
    return out


def differing(runs: list[Run]) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """The settings whose values differ between runs, and each run's value of every candidate.

    With Hydra's records (`.hydra/overrides.yaml`) the candidates are the keys anyone typed, so a
    `loss=hinge` sweep shows one `loss` column, not also `loss.name` and `system.loss.name`.
    Runs without them are compared on the whole resolved config, minus paths into the run."""
    if all(run.overrides is not None for run in runs):
        keys = override_keys(runs)
        values = {id(run): {k: setting(run, k) for k in keys} for run in runs}
    else:
        values = {}
        for run in runs:
            own = str(run.path)
            values[id(run)] = {
                k: v
                for k, v in flat(run.config).items()
                if not k.startswith(DERIVED)
                and not k.endswith("._target_")
                and not (isinstance(v, str) and own in v)
            }
        keys = sorted({k for v in values.values() for k in v})
    differ = [k for k in keys if len({repr(values[id(r)].get(k)) for r in runs}) > 1]
    return differ, values


# --- metric values --------------------------------------------------------------------------------
def choose_metric(runs: list[Run], metric: str | None) -> str | None:
    have = sorted({m for run in runs for m in run.metrics})
    if metric:
        if metric not in have:
            val = [m for m in have if m.startswith("val/")] or have
            raise ConfigError(
                f"metric={metric}: no run logged it; they logged {val or 'nothing yet'}. "
                "Pick one of those (e.g. metric=" + (val[0] if val else "val/fid") + ")"
            )
        return metric
    objectives = {run.config.get("objective") for run in runs} - {None}
    for candidate in [*sorted(objectives), *registry.default_keys()]:
        if candidate in have:
            return candidate
    val = [m for m in have if m.startswith("val/")]
    return val[0] if val else None


def check_ranking(direction: str | None, rank_by: str) -> None:
    if direction not in (None, "minimize", "maximize"):
        raise ConfigError(f"direction={direction} must be minimize or maximize")
    if rank_by not in ("final", "best"):
        raise ConfigError(f"rank_by={rank_by} must be final or best")


def choose_direction(runs: list[Run], metric: str | None, direction: str | None) -> str:
    if direction is not None:
        return direction
    if metric is None:
        return "minimize"
    own = {
        run.config.get("objective_direction")
        for run in runs
        if run.config.get("objective") == metric and run.config.get("objective_direction")
    }
    if len(own) == 1:
        return own.pop()
    return registry.direction(metric) or registry.MINIMIZE


def better(a: float, b: float, direction: str) -> bool:
    """a strictly better than b; NaN is never better."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if direction == "maximize" else a < b


def best_of(series: Series, direction: str) -> tuple[int, float]:
    best_it, best = series[0]
    for it, value in series[1:]:
        if better(value, best, direction):
            best_it, best = it, value
    return best_it, best


def stat(values: list[float]) -> Stat:
    if not values:
        return Stat(0, None, None)
    if not all(math.isfinite(v) for v in values):
        # inf (e.g. reverse KL with no mode captured) makes the mean inf and the spread undefined.
        mean = math.inf if any(v == math.inf for v in values) else math.nan
        if any(v == -math.inf for v in values):
            mean = math.nan if mean == math.inf else -math.inf
        return Stat(len(values), mean, None)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), mean, std)


# --- the table ------------------------------------------------------------------------------------
def build_table(
    runs: list[Run],
    metric: str | None = None,
    group_by: list[str] | None = None,
    direction: str | None = None,
    rank_by: str = "final",
) -> Table:
    check_ranking(direction, rank_by)
    metric = choose_metric(runs, metric)
    direction = choose_direction(runs, metric, direction)
    columns, values = differing(runs)
    notes: list[str] = []
    if group_by is None:
        group_by = [c for c in columns if c != SEED]
    else:
        known = set(values[id(runs[0])]) if values else set()
        for key in group_by:
            if key not in known and all(setting(r, key) is None for r in runs):
                raise ConfigError(
                    f"group_by={','.join(group_by)}: no run has a setting {key!r}; the settings "
                    f"that differ between these runs are {columns or 'none'}"
                )
    rows = []
    for run in runs:
        settings = {k: values[id(run)].get(k, setting(run, k)) for k in {*columns, *group_by}}
        row = Row(run=run, settings=settings)
        series = run.metrics.get(metric) if metric else None
        if series:
            row.final_iter, row.final = series[-1]
            row.best_iter, row.best = best_of(series, direction)
            for name, other in run.metrics.items():
                if name.startswith("val/") and name != metric:
                    at = dict(other)
                    if row.best_iter in at:
                        row.at_best[name] = at[row.best_iter]
        rows.append(row)

    by_key: dict[tuple[tuple[str, Any], ...], list[Row]] = {}
    for row in rows:
        key = tuple((k, row.settings.get(k)) for k in group_by)
        by_key.setdefault(key, []).append(row)
    groups = []
    for key, members in by_key.items():
        label = ", ".join(f"{k}={format_value(v)}" for k, v in key) or "all runs"
        finals = [r.final for r in members if r.final is not None]
        bests = [r.best for r in members if r.best is not None]
        groups.append(Group(label, key, members, stat(finals), stat(bests)))
    _rank(groups, rank_by, direction)
    notes.extend(_overlap_notes(groups, rank_by))
    if metric is None:
        notes.append("no run has logged a val/* metric yet: nothing to rank (metric=... picks one)")
    return Table(metric, direction, rank_by, columns, group_by, rows, groups, notes)


def _rank(groups: list[Group], rank_by: str, direction: str) -> None:
    def key(g: Group) -> tuple[int, float]:
        mean = getattr(g, rank_by).mean
        if mean is None or math.isnan(mean):
            return (1, 0.0)
        return (0, -mean if direction == "maximize" else mean)

    groups.sort(key=key)
    # Equal means share a rank (1, 1, 3): with a tie for first there are several best groups.
    ranked = [g for g in groups if key(g)[0] == 0]
    for i, g in enumerate(ranked):
        g.rank = ranked[i - 1].rank if i and key(g) == key(ranked[i - 1]) else i + 1
        g.is_best = g.rank == 1


def _overlap_notes(groups: list[Group], rank_by: str) -> list[str]:
    ranked = [g for g in groups if g.rank is not None]
    if len(ranked) < 2:
        return []
    top = ranked[0]
    s_top = getattr(top, rank_by)
    notes = []
    tied = [g.label for g in ranked if g.is_best]
    if len(tied) > 1:
        notes.append(f"tied for best ({rank_by} mean {fmt(s_top.mean)}): " + "; ".join(tied))
    for other in ranked[1:]:
        s = getattr(other, rank_by)
        if s_top.std is None or s.std is None:
            continue
        lo_a, hi_a = s_top.mean - s_top.std, s_top.mean + s_top.std
        lo_b, hi_b = s.mean - s.std, s.mean + s.std
        if lo_a <= hi_b and lo_b <= hi_a:
            notes.append(
                f"{top.label} (best) and {other.label}: their {rank_by} mean ± std intervals "
                f"overlap ({fmt_stat(s_top)} vs {fmt_stat(s)}), so the difference is within "
                "seed noise; more seeds would tell them apart"
            )
    if any(getattr(g, rank_by).n == 1 for g in ranked):
        notes.append(
            "groups with n=1 have no seed spread: add seeds (e.g. seed=0,1,2) to see whether "
            "their differences are more than seed noise"
        )
    return notes


# --- formatting -----------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    return str(value)


def fmt(value: float | None) -> str:
    """Every number in ganforge-report's and ganforge-reproduce's tables: 4 significant digits,
    an em dash for no value."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def fmt_stat(s: Stat) -> str:
    if s.mean is None:
        return "—"
    if s.std is None:
        return fmt(s.mean)
    return f"{fmt(s.mean)} ± {fmt(s.std)}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def status_text(run: Run) -> str:
    label = {
        "finished": "finished",
        "running": f"running ({run.iterations}/{run.max_iters or '?'})",
        "stopped": "stopped",
        "nan": "stopped by NaN",
        "failed": "failed",
    }.get(run.status, run.status)
    return label


def group_n_text(g: Group) -> str:
    """`2`, or `2 (1 running; +1 without a value)`: how much of a group's mean is settled."""
    running = sum(1 for r in g.rows if r.run.status == "running" and r.final is not None)
    missing = len(g.not_counted)
    extra = [f"{running} running"] * bool(running) + [f"+{missing} without a value"] * bool(missing)
    return f"{g.final.n}" + (f" ({'; '.join(extra)})" if extra else "")


def health_text(run: Run) -> str:
    if not run.health:
        return "—" if run.health is None else "no episodes"
    parts = []
    for ep in run.health:
        end = ep.get("end")
        span = f"{ep['start']}–{end}" if end is not None else f"{ep['start']}–"
        parts.append(f"{ep['state']} {span}")
    return "; ".join(parts)
