"""Optuna sweeps (`hparams_search=...`): the optimisation history and the parameter importances.

Optuna is an optional extra: it is imported only here, lazily, and its absence leaves the history
(read from the runs) and a message where the importances would be."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganforge.report.collect import Run
from ganforge.report.table import better, setting

RESULTS = "optimization_results.yaml"


@dataclass
class Trial:
    number: int
    value: float | None
    params: dict[str, Any]
    state: str  # COMPLETE | FAIL | RUNNING | ...
    run: str | None = None  # the run's name in the report, where known


@dataclass
class OptunaSweep:
    directory: Path
    objective: str | None
    direction: str
    trials: list[Trial]
    source: str  # where the trials were read from, said on the page
    results: dict[str, Any] | None  # optimization_results.yaml, once the sweep has ended
    importances: dict[str, float] | None = None
    importance_note: str = ""
    notes: list[str] = field(default_factory=list)

    def best_so_far(self) -> list[float | None]:
        best: float | None = None
        out: list[float | None] = []
        for t in self.trials:
            if t.value is not None and (best is None or better(t.value, best, self.direction)):
                best = t.value
            out.append(best)
        return out


def is_optuna(run: Run) -> bool:
    return "optuna" in str((run.hydra.get("sweeper") or {}).get("_target_", ""))


def optuna_sweeps(runs: list[Run]) -> list[OptunaSweep]:
    """One entry per multirun directory whose jobs were launched by Hydra's Optuna sweeper."""
    by_dir: dict[Path, list[Run]] = {}
    for run in runs:
        if is_optuna(run):
            by_dir.setdefault(run.path.parent, []).append(run)
    return [_read_sweep(directory, members) for directory, members in by_dir.items()]


def _read_sweep(directory: Path, runs: list[Run]) -> OptunaSweep:
    sweeper = runs[0].hydra.get("sweeper") or {}
    config = runs[0].config
    objective = config.get("objective")
    # The sweeper's `direction` is `${objective_direction}` in hydra.yaml: read it resolved.
    direction = str(config.get("objective_direction") or sweeper.get("direction") or "minimize")
    results_path = directory / RESULTS
    results = yaml.safe_load(results_path.read_text()) if results_path.is_file() else None
    sweep = OptunaSweep(directory, objective, direction, [], "", results)
    params = dict(sweeper.get("params") or {})

    try:
        import optuna

        # Its "A new study created in memory" INFO lines are noise in a report.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        optuna = None
    study = _load_study(sweeper, runs[0], optuna, sweep) if optuna is not None else None
    if study is not None:
        sweep.trials = [
            Trial(t.number, t.value, dict(t.params), t.state.name) for t in study.trials
        ]
        distributions = {t.number: t.distributions for t in study.trials}
        _attach_runs(sweep.trials, runs, list(params))
    else:
        sweep.trials = _trials_from_runs(runs, objective, list(params))
        sweep.source = (
            f"the {len(runs)} trial directories (each trial's value is the last logged "
            f"{objective}, which is what ganforge-train returned to Optuna)"
        )
        distributions = None
    if results is None:
        sweep.notes.append(f"no {RESULTS} yet: the sweep is still running or was stopped")
    sweep.importances, sweep.importance_note = _importances(
        sweep, optuna, params, distributions, direction
    )
    return sweep


def _load_study(sweeper: dict[str, Any], run: Run, optuna: Any, sweep: OptunaSweep) -> Any:
    storage = sweeper.get("storage")
    name = sweeper.get("study_name")
    if not storage or not name:
        sweep.notes.append(
            "the study was kept in memory (hydra.sweeper.storage=null): trials are read from "
            "the run directories; hydra.sweeper.storage=sqlite:///optuna.db keeps the study"
        )
        return None
    storage = str(storage)
    if storage.startswith("sqlite:///"):
        # A relative sqlite path is relative to where the sweep was started.
        db = Path(storage[len("sqlite:///") :])
        if not db.is_absolute():
            db = Path((run.hydra.get("runtime") or {}).get("cwd", ".")) / db
        if not db.is_file():
            sweep.notes.append(f"study storage {db} is gone: trials read from the run directories")
            return None
        storage = f"sqlite:///{db}"
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as err:  # optuna raises KeyError, sqlalchemy errors, ...: all mean "unusable"
        sweep.notes.append(
            f"could not open study {name!r} in {storage} ({type(err).__name__}: "
            f"{err}); trials read from the run directories"
        )
        return None
    sweep.source = f"the Optuna study {name!r} in {storage}"
    return study


def _trials_from_runs(runs: list[Run], objective: str | None, keys: list[str]) -> list[Trial]:
    trials = []
    for i, run in enumerate(runs):
        series = run.metrics.get(objective) if objective else None
        value = series[-1][1] if series and run.status == "finished" else None
        state = {"finished": "COMPLETE", "running": "RUNNING"}.get(run.status, "FAIL")
        number = (run.hydra.get("job") or {}).get("num", i)
        params = {k: setting(run, k) for k in keys}
        trials.append(Trial(int(number), value, params, state, run.name))
    return sorted(trials, key=lambda t: t.number)


def _attach_runs(trials: list[Trial], runs: list[Run], keys: list[str]) -> None:
    """Name each stored trial's directory: the run with the same sampled parameters."""
    for trial in trials:
        for run in runs:
            if all(_same(setting(run, k), trial.params.get(k)) for k in keys):
                trial.run = run.name
                break


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _importances(
    sweep: OptunaSweep,
    optuna: Any,
    params: dict[str, Any],
    distributions: dict[int, dict[str, Any]] | None,
    direction: str,
) -> tuple[dict[str, float] | None, str]:
    if optuna is None:
        return None, (
            "parameter importances need Optuna, which is not installed here: "
            "pip install 'ganforge[optuna]' and report again"
        )
    finite = [t for t in sweep.trials if t.value is not None and math.isfinite(t.value)]
    left_out = sum(1 for t in sweep.trials if t.value is not None) - len(finite)
    if len(finite) < 2:
        return None, (
            f"parameter importances need at least 2 trials with a finite value; this sweep has "
            f"{len(finite)}" + (f" ({left_out} more with inf/NaN)" if left_out else "")
        )
    if distributions is None:
        try:
            from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
        except ImportError:
            return None, "parameter importances need the hydra-optuna-sweeper plugin installed"
        space, _ = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
        distributions = {t.number: space for t in finite}
    # A fresh in-memory study of the finite trials: fANOVA's random forest cannot take inf, and a
    # fixed seed makes the numbers repeatable from one report to the next.
    study = optuna.create_study(direction=direction)
    with warnings.catch_warnings():
        # add_trial/create_trial are "experimental" in optuna 2.x, and stable since.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for t in finite:
            dist = {k: v for k, v in distributions[t.number].items() if k in t.params}
            study.add_trial(
                optuna.trial.create_trial(params=t.params, distributions=dist, value=t.value)
            )
    # Optuna's default, fANOVA, first; optuna 2.x's fANOVA breaks on newer scikit-learn tree
    # layouts, so its random-forest impurity evaluator is the fallback (and the page says which).
    evaluators = [
        ("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)),
        (
            "mean decrease in impurity",
            optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0),
        ),
    ]
    failures = []
    for name, evaluator in evaluators:
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
            break
        except Exception as err:  # optuna/sklearn refuse degenerate studies in several ways
            first = str(err).split(". ")[0][:100]
            failures.append(f"{name} failed ({type(err).__name__}: {first})")
    else:
        return None, "Optuna could not compute importances (" + "; ".join(failures) + ")"
    note = (
        f"Optuna's {name} importances (optuna.importance.get_param_importances, seed 0) over "
        f"the {len(finite)} trials with a finite value"
        + (f"; {left_out} with inf/NaN left out" if left_out else "")
        + (f"; {failures[0]} with this Optuna and scikit-learn" if failures else "")
        + (". With this few trials they are a rough guide only" if len(finite) < 10 else "")
    )
    return {k: float(v) for k, v in importances.items()}, note
