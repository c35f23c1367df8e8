"""`ganforge-reproduce`: bad inputs, the table's bookkeeping (runs, statistics and numbers read as
ganforge-report reads them), a killed run resumed end to end, a shorter run extended (and when
system.compile forbids it), and the CIFAR-10 presets' code path (the faithful PacGAN recipe's
learning test is tests/test_faithful_pacgan.py; a harness stopped by a signal,
tests/test_reproduce_signals.py)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from fakes import write_cifar
from ganforge import checkpoint
from ganforge.errors import ConfigError, DataError
from ganforge.report.table import fmt
from ganforge.reproduce import (
    Options,
    Variant,
    evaluate_run,
    extend,
    main,
    markdown,
    metric_row,
    paper_samples,
    parse_args,
    protocol_of,
    resume_point,
    runs,
)
from ganforge.train import config_dir

# No sample grids, plots or progress bar: what these tests read is the table.
QUIET = ["callbacks.samples=null", "callbacks.plots=null", "trainer.enable_progress_bar=false"]
# Tiny networks and data: the harness's code path, not the paper's numbers.
TINY = [
    "model.generator.hidden=16",
    "model.generator.depth=1",
    "model.discriminator.hidden=16",
    "model.discriminator.depth=1",
    "data.n_samples=2000",
    "trainer.enable_progress_bar=false",
]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ganforge.reproduce", *args],
        capture_output=True,
        text=True,
        **kwargs,
    )


# --- bad inputs: one message naming the argument, exit 2, nothing trained -------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment=pacgan_gird"], r"experiment=pacgan_gird is not a preset; choose one of .*"),
        (["experiment=pacgan_grid", "seeds=0"], r"seeds=0 must be a positive integer"),
        (["experiment=pacgan_grid", "budget=abc"], r"budget=abc must be a positive integer"),
        (["experiment=pacgan_grid", "jobs=1.5"], r"jobs=1.5 must be a positive integer"),
        (["seeds=3"], r"experiment=NAME is required"),
        (["experiment=pacgan_grid", "seed=4"], r"seed is set by ganforge-reproduce.*seeds=N"),
        (["experiment=pacgan_grid", "variant=PacGAN8"], r"variant=PacGAN8 is not a variant.*GAN"),
        (["experiment=pacgan_grid", "model.widht=3"], r"model\.widht is not a setting"),
        (
            ["experiment=pacgan_grid", "model.pakc=3"],
            r"model\.pakc is not a setting; did you mean model\.pack\?",
        ),
        (["experiment=toy_ring", "optim.lr_d=-1"], r"optim\.lr_d=-1 must be a number >= 0"),
        (["experiment=toy_ring", "--optim.lr_g=-1"], r"optim\.lr_g=-1 must be a number >= 0"),
        (["experiment=pacgan_grid", "oops"], r"argument 'oops' is not key=value"),
        (["experiment=pacgan_grid", "extend=yes"], r"extend=yes must be true or false"),
        (["experiment=toy_grid", "extend=true"], r"extend=true .* has optim\.decay=linear"),
        # R3GAN's schedules span the run unless a span is stated: a shorter run took other steps.
        (
            ["experiment=r3gan_stacked_mnist", "extend=true"],
            r"extend=true .* has optim\.decay=cosine, optim\.beta2_to, system\.penalty_to",
        ),
    ],
)
def test_bad_inputs_exit_2_with_one_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"out={tmp_path}"])
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not any(tmp_path.iterdir())  # failed before any run directory was made


def test_help_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    assert "ganforge-reproduce experiment=pacgan_grid seeds=5" in capsys.readouterr().out


def test_out_naming_a_file_is_one_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    afile = tmp_path / "table.md"
    afile.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment=toy_ring", f"out={afile}"])
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"ConfigError: out={afile} is a file, not a folder; point out at a folder"]
    assert afile.read_text() == "not a folder"


def test_options_keep_train_overrides_apart() -> None:
    opts = parse_args(
        ["experiment=pacgan_ring", "seeds=2", "budget=500", "jobs=2", "model.z_dim=3"]
    )
    assert (opts.seeds, opts.budget, opts.jobs) == (2, 500, 2)
    assert opts.overrides == ("model.z_dim=3",)


# --- the table's arithmetic -----------------------------------------------------------------------
def variant() -> Variant:
    return Variant(
        "GAN", [], {"val/modes_captured": {"mean": 17.3, "err": 0.8}}, OmegaConf.create()
    )


def test_row_reports_spread_comparability_and_per_seed_values() -> None:
    paper = {"mean": 17.3, "err": 0.8}
    row = metric_row(variant(), "val/modes_captured", [(0, 16.0), (1, 18.0), (2, 17.0)], {2500},
               paper, 400000, 400000, {"n_samples": 2500})  # fmt: skip
    assert row["mean"] == pytest.approx(17.0) and row["std"] == pytest.approx(1.0) and row["n"] == 3
    assert row["per_seed"] == {"0": 16.0, "1": 18.0, "2": 17.0}
    assert row["paper_within_2std"] is True and row["note"] == ""
    short = metric_row(variant(), "val/modes_captured", [(0, 3.0), (1, 4.0)], {250}, paper, 5000,
                 400000, {"n_samples": 2500})  # fmt: skip
    assert short["paper_within_2std"] is False
    assert "5,000 of the paper's 400,000 iterations" in short["note"]
    assert "['250'] samples vs the paper's 2500" in short["note"]
    one = metric_row(variant(), "val/modes_captured", [(0, 17.0)], {2500}, paper, 10, None, {})
    assert one["std"] is None and one["paper_within_2std"] is None  # no spread from one seed
    missing = metric_row(variant(), "test/parzen_log_likelihood", [], set(),
                         {"mean": 225, "err": 2}, 10, None, {})  # fmt: skip
    assert missing["n"] == 0 and "not measured" in missing["note"]


def test_image_runs_are_read_from_their_last_logged_evaluation(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "step,train/d_loss,val/fid,val/kid\n10,1.0,,\n100,,80.5,0.05\n150,0.9,,\n200,,61.25,0.04\n"
    )
    cfg = {"data": {"channels": 1}, "callbacks": {"evaluation": {"evaluator": {"n_samples": 250}}}}
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "config_resolved.yaml")
    metrics, samples, note = evaluate_run(tmp_path, {"n_samples": 2500, "min_per_mode": 1})
    assert metrics == {"val/fid": 61.25, "val/kid": 0.04}  # the last evaluation, not the best
    assert samples == {"val/fid": 250, "val/kid": 250} and "iteration 200" in note


def test_a_damaged_metrics_file_is_one_error_naming_the_line(tmp_path: Path) -> None:
    """The run's CSV is read by ganforge-report's reader: a damaged row is a DataError (the run
    gets an error in the table), not a ValueError out of the harness."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step,val/fid\n100,80.5\n200,oops\n")
    OmegaConf.save(OmegaConf.create({"data": {"channels": 1}}), tmp_path / "config_resolved.yaml")
    with pytest.raises(DataError, match=r"line 3: val/fid='oops' is not a number"):
        evaluate_run(tmp_path, None)


def test_the_table_reads_numbers_as_ganforge_report_does() -> None:
    """One formatter (4 significant digits, an em dash for no value) and one mean ± std (a NaN
    seed gives a NaN mean, an infinite reverse KL an infinite one) for both commands."""
    paper = {"mean": 17.3, "err": 0.8}
    row = metric_row(variant(), "val/modes_captured", [(0, 16.123), (1, 18.456)], {2500}, paper,
                     10, None, {})  # fmt: skip
    summary = {"experiment": "pacgan_ring", "date": "d", "machine": "m", "torch": "t",
               "seeds": 2, "jobs": 1, "overrides": [], "source": None, "rows": [row]}  # fmt: skip
    table = markdown(summary)
    spread = f"{fmt(row['mean'])} ± {fmt(row['std'])}"
    assert f"| {spread} (2) | 0: 16.12, 1: 18.46 |" in table and spread == "17.29 ± 1.65"
    assert "Paper: —." in table and "| 17.3 ± 0.8 |" in table
    nan = metric_row(variant(), "val/reverse_kl", [(0, 1.0), (1, math.nan)], {1}, None, 1, None, {})
    inf = metric_row(variant(), "val/reverse_kl", [(0, 1.0), (1, math.inf)], {1}, None, 1, None, {})
    assert math.isnan(nan["mean"]) and "NaN" in nan["note"] and nan["std"] is None
    assert inf["mean"] == math.inf and "infinite reverse KL" in inf["note"]


# --- end to end: table rows, JSON, a killed run resumed -------------------------------------------
@pytest.mark.slow
def test_reproduce_resumes_a_killed_run_and_writes_the_table(tmp_path: Path) -> None:
    budget = 4000
    args = [
        "experiment=pacgan_ring",
        "variant=GAN",
        "seeds=2",
        f"budget={budget}",
        "threads=1",
        f"out={tmp_path}",
        *TINY,
    ]
    seed0 = tmp_path / "pacgan_ring" / "GAN" / f"iters_{budget}" / "seed_0"
    first = subprocess.Popen(
        [sys.executable, "-m", "ganforge.reproduce", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list((seed0 / "checkpoints").glob("iter_*.ckpt")):
            assert first.poll() is None, "the first invocation ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # harness and training process, no clean stop
        first.wait()
    start = resume_point(seed0)
    assert start is not None
    killed_at = checkpoint.load(start).iteration
    assert 0 < killed_at < budget and not (seed0 / "reproduce_result.json").exists()

    done = run_cli(*args, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (seed0 / "train.log").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and "ckpt_path=" in commands[1] and "ckpt_path=" not in commands[0]
    logged = [line for line in log.splitlines() if "][ganforge][" in line]
    assert logged and len(set(logged)) == len(logged)  # each line once (not Hydra's file too)
    assert checkpoint.load(seed0 / "checkpoints" / "last.ckpt").iteration == budget

    table = tmp_path / "pacgan_ring" / f"table_GAN-{budget}"
    summary = json.loads(table.with_suffix(".json").read_text())
    rows = {r["metric"]: r for r in summary["rows"]}
    assert set(rows) == {"val/modes_captured", "val/high_quality", "val/reverse_kl"}
    for r in rows.values():
        assert r["n"] == 2 and set(r["per_seed"]) == {"0", "1"}
        assert r["iterations"] == budget and r["n_samples"] == [2500]
        assert r["paper_mean"] is not None and "not comparable" in r["note"]
    assert rows["val/modes_captured"]["paper_mean"] == 6.3  # read from the preset
    runs = {r["seed"]: r for r in summary["runs"]}
    assert runs[0]["resumed"] is True and runs[1]["resumed"] is False
    markdown = table.with_suffix(".md").read_text()
    assert markdown.count("| GAN | val/") == 3 and "6.3 ± 0.5" in markdown
    assert "| GAN | val/modes_captured |" in done.stdout

    again = run_cli(*args, timeout=300)  # everything done: nothing retrained
    assert again.returncode == 0 and "done earlier" in again.stderr
    assert (seed0 / "train.log").read_text() == log


@pytest.mark.slow
def test_extend_continues_a_shorter_run_into_the_longer_one(tmp_path: Path) -> None:
    """budget=N extend=true from an N/2 run gives the N-iteration run itself (exact resume), and
    says where it began."""
    common = ["experiment=pacgan_ring", "variant=GAN", "seeds=1", "threads=1", *TINY]
    for budget, extra in ((100, []), (200, ["extend=true"])):
        done = run_cli(*common, f"budget={budget}", f"out={tmp_path / 'extended'}", *extra,
                       timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    straight = run_cli(*common, "budget=200", f"out={tmp_path / 'straight'}", timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    def final(out: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        run = tmp_path / out / "pacgan_ring" / "GAN" / "iters_200" / "seed_0"
        result = json.loads((run / "reproduce_result.json").read_text())
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        return result, state

    (extended, extended_state), (direct, direct_state) = final("extended"), final("straight")
    shorter = tmp_path / "extended" / "pacgan_ring" / "GAN" / "iters_100" / "seed_0"
    assert extended["extended_from"] == str(shorter / "checkpoints" / "last.ckpt")
    assert direct["extended_from"] is None
    assert extended_state.keys() == direct_state.keys()
    for key, value in direct_state.items():
        assert torch.equal(extended_state[key], value), key
    assert extended["metrics"] == direct["metrics"]
    commands = (shorter.parent.parent / "iters_200" / "seed_0" / "train.log").read_text()
    assert commands.count("$ ") == 1 and f"ckpt_path={shorter}" in commands

    # Other settings than the shorter run's: one error naming the key, before anything is written.
    changed = [*common, "budget=300", f"out={tmp_path / 'extended'}", "extend=true",
               "model.generator.hidden=32"]  # fmt: skip
    refused = run_cli(*changed, timeout=600)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "trained with system.generator.hidden=16" in refused.stderr
    assert "sets system.generator.hidden=32" in refused.stderr
    assert not (shorter.parent.parent / "iters_300").exists()


@pytest.mark.parametrize(
    ("shorter", "now", "refused"),
    [
        ("system.compile=false", "system.compile=true", True),  # eager into compiled: refused
        ("system.compile=true", "system.compile=false", True),
        ("system.compile=true", "system.compile=default", False),  # the same mode, two spellings
        ("system.compile_dynamic=true", "system.compile_dynamic=false", False),  # both eager
    ],
)
def test_extend_refuses_a_shorter_run_compiled_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shorter: str, now: str, refused: bool
) -> None:
    """Compiled and eager runs are the same game to ~1e-4, not bit for bit: continuing one as
    the other is not the longer run (system.compile is not in EXTEND_MAY_DIFFER)."""
    before = tmp_path / "iters_100" / "seed_0"
    (before / "checkpoints").mkdir(parents=True)
    cfg = compose_train(tmp_path, "experiment=toy_ring", shorter)
    (before / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    start = before / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(extend, "shorter_run_point", lambda *args: start)
    v = Variant("preset", [], {}, compose_train(tmp_path, "experiment=toy_ring", now))
    job = runs.SeedRun(v, 0, tmp_path / "iters_200" / "seed_0")
    opts = Options(experiment="toy_ring", out=tmp_path, extend=True)
    if refused:
        with pytest.raises(ConfigError, match=r"trained with system\.compile=.* sets system\.co"):
            extend.plan_extension(opts, job, 200)
    else:
        extend.plan_extension(opts, job, 200)
        assert job.extend_from == start


def test_extend_warns_that_a_compiled_run_continued_is_not_bit_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compiled = Variant("preset", [], {}, compose_train(tmp_path, "experiment=toy_ring",
                                                        "system.compile=true"))  # fmt: skip
    eager = Variant("eager", [], {}, compose_train(tmp_path, "experiment=toy_ring"))
    extend.check_extendable([compiled, eager], Options(experiment="toy_ring", extend=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "variant preset trains with system.compile=default" in warnings[0]
    assert "not bit for bit the straight longer run" in warnings[0]


def test_image_protocol_names_each_metrics_paper_sample_count() -> None:
    cfg = OmegaConf.create(
        {"data": {"channels": 3},
         "paper": {"protocol": {"n_samples": {"val/is": 50000, "val/fid": 5000}}}}
    )  # fmt: skip
    protocol = protocol_of(cfg)
    assert protocol is not None and paper_samples(protocol, "val/fid") == 5000
    assert paper_samples(protocol, "val/kid") is None  # the paper did not compute it
    row = metric_row(variant(), "val/fid", [(0, 90.0)], {250}, {"mean": 21.7, "err": 0.21}, 2,
                     50000, protocol)  # fmt: skip
    assert "['250'] samples vs the paper's 5000" in row["note"]
    for bad in ({"val/fid": 0}, {"val/fid": "many"}):
        cfg.paper.protocol.n_samples = bad
        with pytest.raises(ConfigError, match=r"paper\.protocol\.n_samples\.val/fid="):
            protocol_of(cfg)
    mixture = OmegaConf.create(
        {"data": {"channels": None}, "paper": {"protocol": {"n_samples": {"val/x": 1}}}}
    )
    with pytest.raises(ConfigError, match="must be one count for a 2-D mixture"):
        protocol_of(mixture)


# The CIFAR-10 presets at paper length need a GPU and hours; here the harness runs each one for
# two iterations on a fake CIFAR-10 (the code path: compose, train, evaluate, table), at the
# preset's own networks and losses, with a tiny evaluation.
CIFAR_PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("*cifar10.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", CIFAR_PRESETS)
def test_cifar_presets_run_through_the_harness(tmp_path: Path, preset: str) -> None:
    write_cifar(tmp_path / "data", 16)
    done = run_cli(
        f"experiment={preset}",
        "seeds=1",
        "budget=2",
        "threads=2",
        f"out={tmp_path / 'out'}",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "data.batch_size=4",
        "metrics.names=[fid]",
        "callbacks.evaluation.evaluator.n_samples=8",
        "callbacks.evaluation.evaluator.reference_count=8",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        *QUIET,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (table,) = (tmp_path / "out" / preset).glob("table_*.json")
    summary = json.loads(table.read_text())
    rows = {r["metric"]: r for r in summary["rows"]}
    fid = rows["val/fid"]
    assert fid["n"] == 1 and fid["iterations"] == 2 and fid["n_samples"] == [8]
    assert math.isfinite(fid["mean"])
    paper = OmegaConf.load(config_dir() / "experiment" / f"{preset}.yaml").get("paper")
    if paper is not None:  # every number the preset quotes is a row, measured or not
        quoted = {m for v in paper.variants for m in v.metrics}
        assert quoted <= set(rows)
        if "val/fid" in quoted:
            assert fid["paper_mean"] is not None and "not comparable" in fid["note"]


def test_preset_variants_compose(tmp_path: Path) -> None:
    for preset in ("pacgan_grid", "pacgan_ring"):
        cfg = compose_train(tmp_path, f"experiment={preset}")
        for v in cfg.paper.variants:
            composed = compose_train(tmp_path, f"experiment={preset}", *v.overrides)
            assert composed.data.batch_size == 100 * composed.model.pack
            assert set(v.metrics) == {"val/modes_captured", "val/high_quality", "val/reverse_kl"}
