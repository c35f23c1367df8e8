"""`ganforge-report`: the comparison table and page built from run directories alone.

Hand-written run directories pin the arithmetic (groups, ranking, overlaps, statuses, bad input);
the slow tests report a real multirun and a real Optuna sweep and check the table against their
CSV files."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.report import Options, main, parse_args, report
from ganforge.report.collect import read_metrics

HEADER = ["step", "train/d_loss", "train/g_loss", "val/high_quality", "val/reverse_kl"]


def make_run(
    folder: Path,
    loss: str,
    seed: int,
    val: list[tuple[int, float, float]],  # (iteration, reverse_kl, high_quality)
    max_iters: int = 300,
    log: str = "",
    extra: list[str] | None = None,
    old: bool = True,
) -> Path:
    """A run directory as ganforge-train and Hydra write it: resolved config, Hydra's overrides
    and group choices, sparse CSV rows (train every 100 iterations, val after each evaluation)."""
    (folder / ".hydra").mkdir(parents=True)
    overrides = ["data=toy_ring", f"loss={loss}", f"seed={seed}", *(extra or [])]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"runtime": {"choices": {"loss": loss, "data": "toy_ring"}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    config = {
        "seed": seed,
        "objective": None,
        "objective_direction": "minimize",
        "train": {"max_iters": max_iters, "log_every": 100},
        "loss": {"name": loss},
        "optim": {"lr_g": 2e-4},
        "model": {"name": "mlp", "pack": 1},
    }
    for override in extra or []:  # e.g. model.pack=3, as Hydra would resolve it
        key, value = override.split("=")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    rows = [HEADER]
    for it, kl, hq in val:
        rows.append([str(it), "1.3", "0.7", "", ""])
        rows.append([str(it), "", "", str(hq), str(kl)])
    (folder / "csv").mkdir()
    with open(folder / "csv" / "metrics.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    (folder / "train.log").write_text(log)
    if old:  # written an hour ago: a run that is not running any more
        stamp = time.time() - 3600
        for p in [folder / "config_resolved.yaml", folder / "csv" / "metrics.csv"]:
            os.utime(p, (stamp - (100 if p.suffix == ".yaml" else 0),) * 2)
        os.utime(folder / "train.log", (stamp,) * 2)
    return folder


def sweep_2x2(root: Path) -> Path:
    # non_saturating: final reverse KL 0.5 and 0.7 (best 0.4 at 200 for seed 0);
    # hinge: 1.0 and 1.6. Intervals: 0.6 ± 0.141 vs 1.3 ± 0.424 -> no overlap.
    make_run(
        root / "0", "non_saturating", 0, [(100, 2.0, 0.01), (200, 0.4, 0.03), (300, 0.5, 0.02)]
    )
    make_run(root / "1", "non_saturating", 1, [(100, 1.5, 0.0), (200, 0.9, 0.02), (300, 0.7, 0.04)])
    make_run(root / "2", "hinge", 0, [(100, 2.1, 0.0), (200, 1.2, 0.0), (300, 1.0, 0.01)])
    make_run(root / "3", "hinge", 1, [(100, 2.0, 0.0), (200, 1.7, 0.0), (300, 1.6, 0.0)])
    return root


def test_groups_rank_and_spread_from_handwritten_runs(tmp_path: Path) -> None:
    sweep = sweep_2x2(tmp_path / "sweep")
    rep = report(Options(paths=[sweep]))
    t = rep.table
    assert t.metric == "val/reverse_kl" and t.direction == "minimize"
    assert t.columns == ["loss", "seed"] and t.group_by == ["loss"]
    rows = {r.run.name: r for r in t.rows}
    assert (rows["0"].final, rows["0"].best, rows["0"].best_iter) == (0.5, 0.4, 200)
    assert rows["0"].at_best == {"val/high_quality": 0.03}
    ns, hinge = t.groups
    assert (ns.label, ns.rank, ns.is_best, hinge.rank) == ("loss=non_saturating", 1, True, 2)
    assert ns.final.mean == pytest.approx(0.6) and ns.final.std == pytest.approx(0.1414214)
    assert hinge.final.mean == pytest.approx(1.3) and hinge.final.std == pytest.approx(0.4242641)
    assert ns.best.mean == pytest.approx(0.55)  # 0.4 and 0.7
    assert not any("overlap" in n for n in t.notes)
    assert all(r.run.status == "finished" for r in t.rows)

    data = json.loads((rep.out / "report.json").read_text())
    assert data["columns"] == ["loss", "seed"]
    assert [g["label"] for g in data["groups"]] == ["loss=non_saturating", "loss=hinge"]
    assert data["groups"][0]["best"] is True and data["groups"][0]["final"]["n"] == 2
    md = (rep.out / "report.md").read_text()
    assert "| ★ 1 | loss=non_saturating | 2 | 0.6 ± 0.1414 |" in md


def test_maximised_metric_and_overlapping_groups(tmp_path: Path) -> None:
    sweep = sweep_2x2(tmp_path / "sweep")
    t = report(Options(paths=[sweep], metric="val/high_quality")).table
    # high_quality is a share: more is better. Finals: ns 0.02, 0.04; hinge 0.01, 0.0.
    assert t.direction == "maximize"
    assert [g.label for g in t.groups] == ["loss=non_saturating", "loss=hinge"]
    assert t.rows[0].best == 0.03 and t.rows[0].best_iter == 200
    # Ranked by best instead: ns 0.03, 0.04 (0.035 ± 0.0071); hinge 0.01, 0.0 (0.005 ± 0.0071).
    t = report(Options(paths=[sweep], metric="val/high_quality", rank_by="best")).table
    assert t.groups[0].best.mean == pytest.approx(0.035)
    # Overlap: make hinge's seeds straddle non_saturating's interval.
    t = report(Options(paths=[sweep], metric="val/reverse_kl", direction="maximize")).table
    assert t.groups[0].label == "loss=hinge"
    (tmp_path / "sweep" / "3" / "csv" / "metrics.csv").write_text("step,val/reverse_kl\n300,0.2\n")
    t = report(Options(paths=[sweep])).table
    # hinge: 1.0 and 0.2 -> 0.6 ± 0.566, same mean as ns (0.6 ± 0.141): within seed noise, and
    # tied for first place.
    assert any("overlap" in n and "within seed noise" in n for n in t.notes)
    assert [(g.rank, g.is_best) for g in t.groups] == [(1, True), (1, True)]
    assert any(n.startswith("tied for best (final mean 0.6)") for n in t.notes)


def test_statuses_failed_nan_running_and_stopped(tmp_path: Path) -> None:
    sweep = sweep_2x2(tmp_path / "sweep")
    error = (
        "[2026-11-29 21:25:06,674][ganforge][ERROR] - ConfigError: data.batch_size=256 is not "
        "divisible by model.pack=3: D judges packs of 3 samples; set data.batch_size to a multiple"
    )
    make_run(sweep / "4", "hinge", 2, [], log=error + "\n", extra=["model.pack=3"])
    nan = "[t][ganforge][ERROR] - NonFiniteLossError: train/d_loss became inf in iteration 2"
    make_run(sweep / "5", "hinge", 3, [(100, 3.0, 0.0)], log=nan + "\n")
    make_run(sweep / "6", "hinge", 4, [(100, 2.0, 0.0)])  # silent for an hour: stopped
    running = make_run(sweep / "7", "hinge", 5, [(100, 1.9, 0.0)], old=False)
    # A running run's CSV may end inside the row being written.
    with open(running / "csv" / "metrics.csv", "a") as f:
        f.write("200,1.2")
    wandb_only = make_run(sweep / "8", "hinge", 6, [])
    (wandb_only / "csv" / "metrics.csv").unlink()
    config = yaml.safe_load((wandb_only / "config_resolved.yaml").read_text())
    config["logger"] = {"wandb": {"mode": "offline"}}
    (wandb_only / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    rep = report(Options(paths=[sweep]))
    rows = {r.run.name: r for r in rep.table.rows}
    assert "trained without the CSV logger" in rows["8"].run.notes[0]
    assert rows["4"].run.status == "failed"
    assert rows["4"].run.error.startswith("ConfigError: data.batch_size=256 is not divisible")
    assert rows["4"].final is None and rows["4"].settings["model.pack"] == 3
    assert rep.table.columns == ["loss", "seed", "model.pack"]
    assert rows["5"].run.status == "nan" and "became inf" in rows["5"].run.error
    assert rows["6"].run.status == "stopped" and "iteration 100 of 300" in rows["6"].run.error
    assert rows["7"].run.status == "running" and rows["7"].run.iterations == 100
    hinge = next(g for g in rep.table.groups if g.label == "loss=hinge, model.pack=1")
    assert hinge.final.n == 5 and len(hinge.not_counted) == 1  # 2, 3, 5, 6, 7; and 8
    md = (rep.out / "report.md").read_text()
    assert "| 4 | hinge | 2 | 3 | failed: ConfigError: data.batch_size=256" in md
    assert "running (100/300) (last CSV line still being written: left out) |" in md
    assert "stopped by NaN: NonFiniteLossError" in md


def test_health_episodes_are_shown_per_run(tmp_path: Path) -> None:
    sweep = sweep_2x2(tmp_path / "sweep")
    episodes = [
        {"state": "mode_collapse", "start": 120, "end": 180, "action": "warn"},
        {"state": "d_overpowering", "start": 250, "end": None},
    ]
    (sweep / "1" / "health.json").write_text(json.dumps(episodes))
    (sweep / "2" / "health.json").write_text("[]")
    rep = report(Options(paths=[sweep]))
    md = (rep.out / "report.md").read_text()
    assert "| health |" in md
    assert "mode_collapse 120–180; d_overpowering 250–" in md
    assert "no episodes" in md
    data = json.loads((rep.out / "report.json").read_text())
    assert data["runs"][1]["health"] == episodes and data["runs"][0]["health"] is None
    page = (rep.out / "index.html").read_text()
    assert "mode_collapse 120–180; d_overpowering 250–" in page

    (sweep / "2" / "health.json").write_text('[{"state": "stalled"}]')
    with pytest.raises(Exception, match=r"health.json episode 0 .* needs 'state'"):
        report(Options(paths=[sweep]))


def test_page_references_only_files_that_exist(tmp_path: Path) -> None:
    sweep = sweep_2x2(tmp_path / "sweep")
    samples = sweep / "0" / "samples"
    samples.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(samples / "iter_0000300.png")
    rep = report(Options(paths=[sweep], out=tmp_path / "elsewhere"))
    assert_page_links_exist(rep.out)
    page = (rep.out / "index.html").read_text()
    assert 'src="samples_00.png"' in page and "run 0, iteration 300" in page
    assert 'src="plot_val_reverse_kl.png"' in page and 'src="plot_train_losses.png"' in page


def assert_page_links_exist(out: Path) -> list[str]:
    page = (out / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs
    for ref in refs:
        assert "://" not in ref and not ref.startswith("/"), ref  # relative: opens from disk
        assert (out / ref).exists(), ref
    return refs


def test_plots_fit_the_scale_to_the_runs_that_did_not_diverge() -> None:
    from matplotlib.figure import Figure

    from ganforge.report.page import _fit_scale

    healthy = [1.0, 1.2, 0.8, 1.1] * 5
    ax = Figure().subplots()
    assert _fit_scale(ax, {0: healthy, 1: [2.0, 0.5] * 10}) == ([], False)
    ax = Figure().subplots()
    assert _fit_scale(ax, {0: healthy, 1: [3e28, 1e29] * 10}) == ([1], False)
    assert ax.get_ylim() == pytest.approx((0.76, 1.24))
    ax = Figure().subplots()
    assert _fit_scale(ax, {0: healthy, 1: [0.0] * 18 + [7e27, 1e29]}) == ([], True)
    assert ax.get_ylim() == pytest.approx((-0.12, 1.32))


def test_cut_off_row_is_dropped_only_while_a_run_writes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,val/fid\n100,50.0\n200,4")
    series, cut = read_metrics(path, may_be_writing=True)
    assert series == {"val/fid": [(100, 50.0)]} and cut
    with pytest.raises(Exception, match=r"cut off in the middle of line 3"):
        read_metrics(path, may_be_writing=False)
    path.write_text("step,val/fid\n100,50.0\n200\n300,40.0\n")
    with pytest.raises(Exception, match=r"line 3 has 1 fields but the header has 2"):
        read_metrics(path, may_be_writing=True)


def test_optuna_trials_rebuilt_from_their_directories(tmp_path: Path) -> None:
    """A sweep whose study lived in memory: trials, history and importances from the job dirs."""
    pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    params = {
        "optim.lr_g": "tag(log, interval(1e-4, 2e-3))",
        "loss": "choice(non_saturating, hinge)",
    }
    trials = [  # (loss, lr_g, final reverse KL); job 3 failed
        ("hinge", 1e-4, 0.9),
        ("non_saturating", 5e-4, 0.5),
        ("non_saturating", 2e-4, 0.7),
        ("hinge", 1e-3, None),
        ("hinge", 3e-4, 0.8),
    ]
    for num, (loss, lr, kl) in enumerate(trials):
        val = [(100, 2.0, 0.0)] + ([(300, kl, 0.01)] if kl is not None else [])
        log = "" if kl is not None else "[t][ganforge][ERROR] - ConfigError: boom\n"
        run = make_run(sweep / str(num), loss, 0, val, log=log, extra=[f"optim.lr_g={lr}"])
        hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
        hydra["hydra"]["job"] = {"num": num}
        hydra["hydra"]["sweeper"] = {
            "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
            "direction": "${objective_direction}",
            "storage": None,
            "study_name": "toy_ring",
            "params": params,
        }
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
        config = yaml.safe_load((run / "config_resolved.yaml").read_text())
        config["objective"] = "val/reverse_kl"
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    rep = report(Options(paths=[sweep]))
    (s,) = rep.sweeps
    assert "trial directories" in s.source and "kept in memory" in s.notes[0]
    assert [t.value for t in s.trials] == [0.9, 0.5, 0.7, None, 0.8]
    assert [t.state for t in s.trials] == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    assert s.best_so_far() == [0.9, 0.5, 0.5, 0.5, 0.5]
    assert s.trials[1].params == {"optim.lr_g": 5e-4, "loss": "non_saturating"}
    assert s.importances is not None and set(s.importances) == {"optim.lr_g", "loss"}
    assert sum(s.importances.values()) == pytest.approx(1.0)
    assert "over the 4 trials with a finite value" in s.importance_note
    assert "no optimization_results.yaml yet" in s.notes[-1]
    refs = assert_page_links_exist(rep.out)
    assert {"optuna_history_0.png", "optuna_importances_0.png"} <= set(refs)


# --- bad input: one message, exit 2, no traceback ------------------------------------------------
def _truncate_finished(root: Path) -> list[str]:
    sweep = sweep_2x2(root / "sweep")
    csv_path = sweep / "2" / "csv" / "metrics.csv"
    text = csv_path.read_text()
    csv_path.write_text(text[: len(text) - 6])  # cut inside the last row
    os.utime(csv_path, (time.time() - 3600,) * 2)
    return [str(sweep)]


def _garbage_csv(root: Path) -> list[str]:
    sweep = sweep_2x2(root / "sweep")
    (sweep / "2" / "csv" / "metrics.csv").write_bytes(bytes(range(255, 0, -1)) * 8)
    return [str(sweep)]


def _nul_csv(root: Path) -> list[str]:
    sweep = sweep_2x2(root / "sweep")
    (sweep / "2" / "csv" / "metrics.csv").write_bytes(b"\0" * 512)
    return [str(sweep)]


def attempt(folder: Path) -> Path:
    """What Hydra and ganforge-train leave of a single run stopped by its checks: Hydra's record
    and the one error line, no config_resolved.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["optim.lr_d=-1"]))
    hydra = {"hydra": {"mode": "RUN", "runtime": {"choices": {"loss": "hinge"}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    line = "[t][ganforge][ERROR] - ConfigError: optim.lr_d=-1 must be a number >= 0"
    (folder / "train.log").write_text(line + "\n")
    return folder


def _only_an_attempt(root: Path) -> list[str]:
    return [str(attempt(root / "runs" / "2026-01-01_00-00-00"))]


def test_an_attempt_that_stopped_before_training_is_skipped_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = tmp_path / "runs"
    make_run(runs / "a", "hinge", 0, [(100, 2.0, 0.0), (300, 1.0, 0.0)])
    attempt(runs / "b")
    rep = report(Options(paths=[runs]))
    assert [r.name for r in rep.runs] == ["a"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"skipped {(runs / 'b').resolve()}: it stopped before training")


def test_console_prints_notes_as_written_not_as_rich_markup(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from ganforge.report import print_report

    run = make_run(tmp_path / "runs" / "a", "hinge", 0, [])
    (run / "csv" / "metrics.csv").unlink()
    config = yaml.safe_load((run / "config_resolved.yaml").read_text())
    config["logger"] = {"wandb": {"mode": "offline"}}
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    stream = io.StringIO()
    print_report(report(Options(paths=[run])), Console(file=stream, width=400))
    assert "'logger=[csv,wandb]'" in stream.getvalue()


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda root: [str(root / "nothing")], "does not exist"),
        (lambda root: [str(root)], "no runs under"),
        (_truncate_finished, "metrics.csv is cut off in the middle of line 7"),
        (
            lambda root: [str(sweep_2x2(root / "sweep")), "metric=val/fid"],
            "metric=val/fid: no run logged it; they logged ['val/high_quality', 'val/reverse_kl']",
        ),
        (lambda root: [str(sweep_2x2(root / "s")), "colour=red"], "unknown option 'colour'"),
        (lambda root: [str(sweep_2x2(root / "s")), "group_by=lr"], "no run has a setting 'lr'"),
        (lambda root: [], "no PATH given"),
        (_garbage_csv, "metrics.csv is not text (byte 0 is not UTF-8): it is damaged"),
        (_nul_csv, "metrics.csv holds NUL bytes (line 1)"),
        (lambda root: [str(sweep_2x2(root / "s")), "metrc=val/fid"], "did you mean metric="),
        (_only_an_attempt, "stopped before training on a user error"),
    ],
    ids=[
        "missing-path",
        "no-runs",
        "truncated-csv",
        "unknown-metric",
        "option",
        "group-by",
        "none",
        "binary-csv",
        "nul-csv",
        "option-typo",
        "only-attempts",
    ],
)
def test_bad_input_is_one_message_and_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make_args: Any, expected: str
) -> None:
    args = make_args(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and expected in errors[0], errors


def test_console_command_prints_the_message_without_a_traceback(tmp_path: Path) -> None:
    args = _truncate_finished(tmp_path)
    cmd = [sys.executable, "-m", "ganforge.report", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "DataError:" in proc.stderr and "cut off in the middle of line 7" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert parse_args([args[0], "group_by=[loss,seed]"]).group_by == ["loss", "seed"]


# --- real runs ------------------------------------------------------------------------------------
def run_train(log_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_LOG_DIR": str(log_dir)}
    cmd = [sys.executable, "-m", "ganforge.train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=log_dir)
    if ok:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def csv_column(path: Path, name: str) -> list[tuple[int, float]]:
    """The test's own reading of a metrics.csv column (not the report's parser)."""
    with open(path) as f:
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(f) if r.get(name)]


@pytest.mark.slow
def test_report_of_a_real_multirun_matches_its_csv_files(tmp_path: Path) -> None:
    # 2 losses x 3 seeds, where seed=-1 is refused by train's checks: the multirun logs those two
    # jobs' errors and goes on, so the sweep holds 4 finished jobs and 2 failed ones.
    proc = run_train(
        tmp_path,
        "-m",
        "experiment=toy_ring",
        "model.hidden=64",
        "train.max_iters=240",
        "callbacks.evaluation.every_n_iters=80",
        "callbacks.evaluation.evaluator.n_samples=1000",
        "callbacks.samples.every_n_iters=120",
        "callbacks.checkpoint.every_n_iters=1000",
        "loss=non_saturating,hinge",
        "seed=0,1,-1",
        ok=False,
    )
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    (sweep,) = tmp_path.glob("train/multiruns/*")
    rep = report(Options(paths=[sweep], metric="val/high_quality"))
    t = rep.table
    assert t.columns == ["loss", "seed"] and t.group_by == ["loss"]  # seed folded into groups
    assert t.direction == "maximize"
    rows = {r.run.name: r for r in t.rows}
    assert sorted(rows) == ["0", "1", "2", "3", "4", "5"]
    for name in ["2", "5"]:  # the seed=-1 jobs
        run = rows[name].run
        assert run.status == "failed" and run.error.startswith("ConfigError: seed=-1"), run.error
        assert rows[name].final is None and rows[name].settings["seed"] == -1

    finals: dict[str, list[float]] = {}
    for name in ["0", "1", "3", "4"]:
        row = rows[name]
        series = csv_column(sweep / name / "csv" / "metrics.csv", "val/high_quality")
        assert [it for it, _ in series] == [80, 160, 240]
        assert row.run.status == "finished" and row.run.iterations == 240
        assert row.final == series[-1][1] and row.final_iter == 240
        best = max(v for _, v in series)
        assert row.best == best and row.best_iter == next(it for it, v in series if v == best)
        kl = dict(csv_column(sweep / name / "csv" / "metrics.csv", "val/reverse_kl"))
        assert row.at_best["val/reverse_kl"] == kl[row.best_iter]
        assert row.run.wall_s > 0 and row.run.it_per_s > 0
        finals.setdefault(row.settings["loss"], []).append(series[-1][1])

    means = {loss: statistics.fmean(v) for loss, v in finals.items()}
    order = sorted(means, key=means.get, reverse=True)
    assert [g.label for g in t.groups] == [f"loss={loss}" for loss in order]
    tie = means["non_saturating"] == means["hinge"]
    assert [(g.rank, g.is_best) for g in t.groups] == [(1, True), (1 if tie else 2, tie)]
    for g in t.groups:
        loss = g.label.removeprefix("loss=")
        assert g.final.n == 2 and len(g.not_counted) == 1  # the failed seed=-1 job
        assert g.final.mean == pytest.approx(means[loss])
        assert g.final.std == pytest.approx(statistics.stdev(finals[loss]))

    refs = assert_page_links_exist(rep.out)
    assert {"samples_00.png", "samples_01.png", "plot_val_high_quality.png"} <= set(refs)
    assert "plot_train_losses.png" in refs and "plot_val_reverse_kl.png" in refs
    md = (rep.out / "report.md").read_text()
    assert "failed: ConfigError: seed=-1" in md
    # The default metric on 2-D data: reverse KL, minimised.
    t = report(Options(paths=[sweep])).table
    assert (t.metric, t.direction) == ("val/reverse_kl", "minimize")


@pytest.mark.slow
def test_report_of_an_optuna_sweep_has_history_and_importances(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the optuna extra")
    optuna = pytest.importorskip("optuna")
    db = tmp_path / "study.db"
    run_train(
        tmp_path,
        "hparams_search=toy_ring_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "model.hidden=64",
        "train.max_iters=200",
        "train.log_every=20",
        "callbacks.evaluation.evaluator.n_samples=2000",
        "callbacks.samples.every_n_iters=100",
        "num_threads=1",
    )
    (sweep,) = tmp_path.glob("train/multiruns/*")
    rep = report(Options(paths=[sweep]))
    (s,) = rep.sweeps
    study = optuna.load_study(study_name="toy_ring", storage=f"sqlite:///{db}")
    assert "Optuna study 'toy_ring'" in s.source
    assert [(t.number, t.value) for t in s.trials] == [(t.number, t.value) for t in study.trials]
    assert all(t.run is not None for t in s.trials)  # each trial found its directory
    values = [t.value for t in study.trials]
    assert s.best_so_far() == [min(values[: i + 1]) for i in range(3)]
    assert s.results is not None and s.results["best_value"] == min(values)
    assert rep.table.metric == "val/reverse_kl"  # the sweep's objective
    assert rep.table.columns == ["optim.lr_g", "optim.lr_d", "loss"]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if len(finite) >= 2:
        assert s.importances is not None
        assert set(s.importances) <= {"optim.lr_g", "optim.lr_d", "loss"}
        assert sum(s.importances.values()) == pytest.approx(1.0)
    else:
        assert "at least 2 trials with a finite value" in s.importance_note
    refs = assert_page_links_exist(rep.out)
    assert "optuna_history_0.png" in refs
    assert ("optuna_importances_0.png" in refs) == (s.importances is not None)

    # Without the study storage the trials come from the trial directories: same values, since
    # each is the objective's last logged value, which is what train returned to Optuna.
    db.unlink()
    (s2,) = report(Options(paths=[sweep])).sweeps
    assert "trial directories" in s2.source
    assert [(t.number, t.value) for t in s2.trials] == [(t.number, t.value) for t in s.trials]
    assert [t.params for t in s2.trials] == [t.params for t in s.trials]
    assert (s2.importances is None) == (s.importances is None)


def test_it_per_s_counts_training_time_not_setup(tmp_path: Path) -> None:
    """The rate is the training's own, as train.log records it at each process's end (a resumed
    directory: both); without those lines, the iterations over the wall time (here 100 s)."""
    val = [(100, 2.0, 0.01), (200, 0.4, 0.03), (300, 0.5, 0.02)]
    log = (
        "[x][ganforge][INFO] - training: 200 iterations in 10.0 s, 20 it/s (setup ...)\n"
        "[x][ganforge][INFO] - training: 100 iterations in 10.0 s, 10 it/s (setup ...)\n"
    )
    make_run(tmp_path / "s" / "0", "hinge", 0, val, log=log)
    make_run(tmp_path / "s" / "1", "hinge", 1, val)
    rows = {r.run.name: r.run for r in report(Options(paths=[tmp_path / "s"])).table.rows}
    assert rows["0"].it_per_s == pytest.approx(15.0)
    assert rows["1"].it_per_s == pytest.approx(3.0) and rows["1"].wall_s == pytest.approx(100)


def test_the_progress_callback_records_the_training_speed(caplog) -> None:
    from conftest import quiet_trainer, toy_system
    from ganforge.callbacks.progress import TRAINED_RE, IterationProgress

    system, dm = toy_system(max_iters=5)
    with caplog.at_level("INFO", logger="ganforge"):
        progress = IterationProgress(5, live=False)
        trainer = quiet_trainer(callbacks=[progress], enable_progress_bar=True)
        trainer.fit(system, datamodule=dm)
    [(iterations, seconds)] = TRAINED_RE.findall("\n".join(r.getMessage() for r in caplog.records))
    assert int(iterations) == 5 and float(seconds) > 0
