"""The console entry point as a user meets it: one clear message, no traceback, non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ganforge.train", f"hydra.run.dir={tmp_path}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss=nope"], "loss=nope is not an option of loss; "),
        (["model=nope"], "model=nope is not an option of model; "),
        (["data=nope"], "data=nope is not an option of data; "),
        (["data=mnist", "data.download=false"], "data.root"),
        (["data=image_folder", "data.image_size=48", "data.root=."], "data.image_size=48"),
        (["callbacks.checkpoint.every_n_iters=0"], "callbacks.checkpoint.every_n_iters=0 must"),
        (["callbacks.samples.every_n_iters=0"], "callbacks.samples.every_n_iters=0 must"),
        (["callbacks.evaluation.every_n_iters=-5"], "callbacks.evaluation.every_n_iters=-5 must"),
        (["callbacks.plots.n_snapshots=1"], "callbacks.plots.n_snapshots=1 must"),
    ],
    ids=[
        "loss",
        "model",
        "data",
        "missing-dataset",
        "image-size",
        "checkpoint-every",
        "samples-every",
        "evaluation-every",
        "plots-snapshots",
    ],
)
def test_user_errors_are_one_clear_message(tmp_path: Path, overrides, expected) -> None:
    if "data=image_folder" in overrides:
        from fakes import write_image_folder

        write_image_folder(tmp_path, 4)
    result = run_train(tmp_path, *overrides)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()  # failed before anything was trained


def test_progress_in_a_log_is_a_plain_line_every_five_percent(tmp_path: Path) -> None:
    """Not a terminal (a log file, a SLURM job): `iteration N/M` lines every ~5 % of the run,
    with it/s, time left and the losses, and no Lightning epoch bar."""
    result = run_train(
        tmp_path,
        "data=toy_ring",
        "model=mlp",
        "model.hidden=16",
        "callbacks=default",
        "logger=none",
        "train.max_iters=100",
        "train.log_every=1",
        "num_threads=1",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = [line for line in output.splitlines() if "] - iteration " in line]
    assert [line.split("] - iteration ")[1].split(" ")[0] for line in lines] == [
        f"{i}/100" for i in range(5, 101, 5)
    ]
    assert "(50%)" in lines[9] and "it/s" in lines[9] and "left" in lines[9]
    assert "d_loss" in lines[-1] and "g_loss" in lines[-1]
    assert "Epoch" not in output


def test_progress_line_and_interval() -> None:
    from ganforge.callbacks.progress import format_line, plain_interval

    assert plain_interval(2000, 10) == 100  # 5 % of the run, a multiple of log_every
    assert plain_interval(50, 10) == 10
    assert plain_interval(None, 10) == 100
    metrics = {"train/d_loss": 1.23456, "train/g_loss": 0.5, "val/fid": 87.654, "x": 1.0}
    assert format_line(1000, 2000, 4.0, metrics) == (
        "iteration 1000/2000 (50%) | 4 it/s, 4:10 left | d_loss 1.235 g_loss 0.5 | val/fid 87.65"
    )
    assert format_line(7, None, None, {}) == "iteration 7"


def test_progress_on_a_terminal_redraws_one_line() -> None:
    import io

    from conftest import quiet_trainer, toy_system
    from ganforge.callbacks.progress import IterationProgress

    stream = io.StringIO()
    system, dm = toy_system(max_iters=5)
    bar = IterationProgress(5, log_every=1, stream=stream, live=True)
    quiet_trainer(callbacks=[bar], enable_progress_bar=True).fit(system, datamodule=dm)
    text = stream.getvalue()
    assert text.startswith("\riteration 1/5 (20%)")
    assert "\riteration 5/5 (100%)" in text  # the final state, drawn at the end
    assert text.endswith("\x1b[K\n")  # each draw clears the line's tail; the end moves on
    assert text.count("\n") == 1  # one line, redrawn in place


# --- Hydra-level mistakes: one ganforge line, exit 2, before any run folder --------------------
# (command, arguments, what the one line says: the key typed, the closest real one, the fix)
HYDRA_LEVEL = [
    (
        "train",
        ["train.max_iter=100"],
        "train.max_iter is not a setting; did you mean train.max_iters?",
    ),
    # Hydra's own hint (`+train.max_iter=100`) would add a key nothing reads: refused.
    (
        "train",
        ["+train.max_iter=100"],
        "+train.max_iter=100 would add a key that nothing reads; did you mean "
        "train.max_iters=100? (to add train.max_iter anyway: ++train.max_iter=100)",
    ),
    (
        "train",
        ["optim.lr=1e-3"],
        "optim.lr is not a setting; did you mean optim.lr_g or optim.lr_d?",
    ),
    ("train", ["model=mlp", "model.hiden=64"], "did you mean model.hidden?"),
    # A key of another option of the group: that option named.
    (
        "train",
        ["model.hiden=64"],
        "model.hiden is not a setting of model=dcgan; model=mlp has model.hidden: add model=mlp",
    ),
    ("train", ["optim.momentum=0.5"], "optim=sgd has optim.momentum: add optim=sgd"),
    ("train", ["model.foo=1"], "model.foo is not a setting; model=dcgan has name, z_dim"),
    ("train", ["modle.hidden=64"], "modle.hidden: modle is not a setting; did you mean model?"),
    (
        "train",
        ["loss=hinje"],
        "loss=hinje is not an option of loss; did you mean loss=hinge? options: hinge, lsgan,",
    ),
    ("train", ["logger=[csv,wandbb]"], "logger=wandbb is not an option of logger; did you mean"),
    ("train", ["-m", "loss=hinge,hinje"], "loss=hinje is not an option of loss"),
    # Every job of a sweep is checked, not only the first.
    (
        "train",
        ["-m", "model=mlp,dcgan", "model.hidden=64"],
        "in the jobs with model=dcgan: model.hidden is not a setting",
    ),
    ("train", ["hydra.jb.chdir=true"], "did you mean hydra.job.chdir"),
    ("train", ["--max_iters"], "--max_iters is not an option: settings are key=value overrides"),
    ("train", ["--optim.lr=0.1"], "optim.lr is not a setting; did you mean optim.lr_g"),
    ("train", ["x=[1,2"], "cannot read the override 'x=[1,2'"),
    ("eval", [], "ckpt is required; e.g. ganforge-eval ckpt=outputs/train/runs/"),
    ("eval", ["ckpt=x.ckpt", "metrics.n_sample=9"], "did you mean metrics.n_samples"),
    ("sample", [], "ckpt is required; e.g. ganforge-sample ckpt="),
]


@pytest.mark.parametrize(("command", "args", "expected"), HYDRA_LEVEL)
def test_a_hydra_level_mistake_is_named_with_the_closest_key(command, args, expected) -> None:
    from ganforge import overrides
    from ganforge.cli import config_dir
    from ganforge.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        argv = overrides.normalize(args)
        overrides.check_argv(argv, config_dir(), command, f"ganforge-{command}")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["optim.lr_d=1e-3", "logger=[csv,tensorboard]"],
        ["logger=wandb", "+logger.wandb.notes=mine"],  # a new key with no near-twin (wandb.init)
        ["++train.max_iter=5"],  # added on purpose
        ["-m", "model=mlp", "model.hidden=16,32", "seed=1,2"],
        ["experiment=toy_ring", "~callbacks.samples"],
        ["hydra/launcher=joblib", "hydra.run.dir=/tmp/x"],
        ["--cfg", "job"],
    ],
)
def test_good_command_lines_pass_the_check(args) -> None:
    from ganforge import overrides
    from ganforge.cli import config_dir

    overrides.check_argv(overrides.normalize(args), config_dir(), "train", "ganforge-train")


def test_argparse_style_arguments_are_overrides() -> None:
    """What a W&B Sweeps agent passes with `${args}`: `--key=value`; Hydra's flags stay."""
    from ganforge.overrides import normalize

    argv = ["--optim.lr_d=0.001", "-m", "--multirun", "seed=1", "--config-name=train", "--cfg"]
    assert normalize(argv) == [
        "optim.lr_d=0.001",
        "-m",
        "--multirun",
        "seed=1",
        "--config-name=train",
        "--cfg",
    ]


def test_console_commands_say_one_line_exit_2_and_leave_no_run_folder(tmp_path: Path) -> None:
    """Through the console entry points (in one process, tests/commands_driver.py)."""
    import json

    cases = [
        ("train-typo", "ganforge-train", ["train.max_iter=100"]),
        ("train-sweep", "ganforge-train", ["-m", "loss=hinge,hinje"]),
        ("train-dashes", "ganforge-train", ["--optim.lr=0.1"]),
        ("eval-no-ckpt", "ganforge-eval", []),
        ("sample-no-ckpt", "ganforge-sample", ["n=4"]),
    ]
    logs = tmp_path / "logs"
    specs = [
        {
            "id": i,
            "command": c,
            "argv": a,
            "env": {"GANFORGE_LOG_DIR": str(logs)},
            "cwd": str(tmp_path),
        }
        for i, c, a in cases
    ]
    (tmp_path / "cases.json").write_text(json.dumps(specs))
    driver = Path(__file__).with_name("commands_driver.py")
    cmd = [sys.executable, str(driver), str(tmp_path / "cases.json"), str(tmp_path / "out.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())
    for case_id, _, _ in cases:
        got = results[case_id]
        lines = [line for line in got["output"].splitlines() if line.strip()]
        assert got["code"] == 2, got
        assert len(lines) == 1 and lines[0].startswith("ConfigError: "), got
    assert not logs.exists()  # nothing ganforge-report could count as a run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.json", "out.json"]


def test_run_summary_names_final_and_best_with_its_iteration(tmp_path: Path) -> None:
    from ganforge.summary import headline, multirun_lines, run_summary, summary_lines, wandb_summary

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "step,train/g_loss,val/fid,val/recall\n10,0.5,,\n100,,80.5,0.2\n200,,70.25,0.1\n"
        "300,0.7,75.0,0.15\n"
    )
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "health.json").write_text('[{"state": "stalled", "start": 120, "end": null}]')
    final = {"val/fid": 75.0, "val/recall": 0.15, "train/g_loss": 0.7, "train/iterations": 300}
    summary = run_summary({**final, "output_dir": "x"}, tmp_path, wall_s=83.4)
    # fid is minimised, recall maximised (the metric registry's directions)
    assert summary["best"] == {
        "val/fid": {"value": 70.25, "iteration": 200},
        "val/recall": {"value": 0.2, "iteration": 100},
    }
    lines = summary_lines(summary)
    assert lines[0] == (
        "finished 300 iterations in 1m23s: val/fid 75 (best 70.25 at iteration 200); "
        "val/recall 0.15 (best 0.2 at iteration 100); train/g_loss 0.7"
    )
    assert lines[1] == "health: stalled from 120"
    assert lines[2] == f"run folder: {tmp_path}"
    assert lines[3] == f"checkpoints: last.ckpt (in {tmp_path / 'checkpoints'})"
    assert wandb_summary(summary)["best/val/fid_iteration"] == 200
    assert headline(summary, "val/recall") == "val/recall 0.15 (best 0.2 at 100)"
    jobs = [
        {"num": 0, "overrides": "model=mlp loss=hinge", "result": headline(summary)},
        {"num": 1, "overrides": "model=mlp loss=lsgan", "result": "failed: ConfigError"},
    ]
    assert multirun_lines(jobs, "/s") == [
        "multirun: 2 job(s), all with model=mlp",
        "    0  loss=hinge  val/fid 75 (best 70.25 at 200)",
        "    1  loss=lsgan  failed: ConfigError",
        "compare them: ganforge-report /s",
    ]
