"""What a finished run (and a finished multirun) tells its user: the final and best metrics with
the best's iteration, health episodes, wall time, the run folder and its checkpoints.

Read from what the run wrote (its CSV through `report.collect`, the owner of that format) and
from the final metrics `train` returns; printed to the log, and handed to W&B's run summary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ganforge.errors import DataError
from ganforge.metrics import registry
from ganforge.report.collect import CSV, HEALTH, format_duration, read_health, read_metrics


def run_summary(metrics: dict[str, Any], out: Path, wall_s: float) -> dict[str, Any]:
    """The run's summary as plain data (also what W&B's run summary gets)."""
    final = {k: float(v) for k, v in metrics.items() if "/" in k and _number(v)}
    best: dict[str, dict[str, float]] = {}
    try:
        series = read_metrics(out / CSV, may_be_writing=False)[0] if (out / CSV).is_file() else {}
    except DataError:
        series = {}
    for key, points in series.items():
        direction = registry.direction(key) if key.startswith("val/") else None
        finite = [(it, v) for it, v in points if math.isfinite(v)]
        if direction is None or not finite:
            continue
        pick = max if direction == registry.MAXIMIZE else min
        it, value = pick(finite, key=lambda p: p[1])
        best[key] = {"value": value, "iteration": it}
    episodes = []
    if (out / HEALTH).is_file():
        try:
            episodes = read_health(out / HEALTH)
        except DataError:
            episodes = []
    ckpts = sorted(str(p) for p in (out / "checkpoints").glob("*.ckpt"))
    return {
        "final": final,
        "best": best,
        "health": [
            f"{e['state']} from {e['start']}" + (f" to {e['end']}" if e.get("end") else "")
            for e in episodes
        ],
        "wall_s": round(wall_s, 1),
        "run_dir": str(out),
        "checkpoints": ckpts,
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as log lines, e.g. `final: val/fid 87.6 (best 80.1 at iteration 1500)`."""
    final, best = summary["final"], summary["best"]
    shown = [k for k in final if k.startswith("val/")] + [
        k for k in ("train/d_loss", "train/g_loss") if k in final
    ]
    parts = []
    for key in shown:
        text = f"{key} {final[key]:.4g}"
        if key in best:
            text += f" (best {best[key]['value']:.4g} at iteration {best[key]['iteration']})"
        parts.append(text)
    iterations = final.get("train/iterations")
    head = f"finished {int(iterations)} iterations" if iterations is not None else "finished"
    lines = [f"{head} in {format_duration(summary['wall_s'])}: " + ("; ".join(parts) or "-")]
    if summary["health"]:
        lines.append("health: " + "; ".join(summary["health"]))
    lines.append(f"run folder: {summary['run_dir']}")
    if summary["checkpoints"]:
        names = ", ".join(Path(c).name for c in summary["checkpoints"])
        lines.append(f"checkpoints: {names} (in {Path(summary['checkpoints'][0]).parent})")
    return lines


def wandb_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat keys for W&B's run summary: `best/val/fid`, `best/val/fid_iteration`, `wall_s`,
    `run_dir`, `health`, `checkpoints` (W&B keeps each metric's last value there itself)."""
    out: dict[str, Any] = {}
    for key, b in summary["best"].items():
        out[f"best/{key}"] = b["value"]
        out[f"best/{key}_iteration"] = b["iteration"]
    out.update(wall_s=summary["wall_s"], run_dir=summary["run_dir"])
    out["checkpoints"] = ", ".join(summary["checkpoints"])
    out["health"] = "; ".join(summary["health"]) or "no episodes"
    return out


def headline(summary: dict[str, Any], objective: str | None = None) -> str:
    """One metric for a multirun's table: the objective, else the primary metric the report
    ranks by (the registry's default keys: val/fid, val/reverse_kl, ...), else g_loss."""
    final, best = summary["final"], summary["best"]
    ranked = [k for k in registry.default_keys() if k in final]
    vals = ranked + [k for k in final if k.startswith("val/")]
    key = objective if objective in final else (vals[0] if vals else "train/g_loss")
    if key not in final:
        return "finished"
    text = f"{key} {final[key]:.4g}"
    if key in best:
        text += f" (best {best[key]['value']:.4g} at {best[key]['iteration']})"
    return text


def multirun_lines(jobs: list[dict[str, Any]], sweep_dir: str | None) -> list[str]:
    """A short table of a multirun's jobs (number, overrides, status, primary metric) and the
    ganforge-report command for the rest."""
    if not jobs:
        return []
    # What differs between the jobs: an override every job has is left out.
    split = [j["overrides"].split(" ") for j in jobs]
    common = set.intersection(*map(set, split)) if len(jobs) > 1 else set()
    shown = [" ".join(o for o in s if o not in common) or "(same)" for s in split]
    lines = [
        f"multirun: {len(jobs)} job(s)"
        + (f", all with {' '.join(sorted(common))}" if common else "")
    ]
    width = max(map(len, shown))
    for job, text in zip(jobs, shown, strict=True):
        lines.append(f"  {job['num']:>3}  {text:<{width}}  {job['result']}")
    if sweep_dir:
        lines.append(f"compare them: ganforge-report {sweep_dir}")
    return lines
