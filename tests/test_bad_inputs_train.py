"""`ganforge-train` on bad input: exit code 2, one message naming the key or file the user typed
(and the fix), no traceback, and nothing written or overwritten — checked case by case.

Every case gets its own log folder holding an earlier run (config, checkpoints, CSV) and must
leave it byte for byte as it was; the only new files allowed are Hydra's own record of the
attempt (`.hydra/`, `train.log` in the new run folder). The cases run through the console entry
point in one subprocess (tests/commands_driver.py: torch and Lightning are imported once, not
once per case); `test_driver_agrees_with_separate_processes` and the sweep test run real
`ganforge-train` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import compose_train
from ganforge.errors import ConfigError
from ganforge.train import train

TESTS = Path(__file__).parent
TINY = ["data=toy_ring", "model=mlp", "model.hidden=16", "model.depth=2", "debug=smoke"]
TINY += ["logger=none", "num_threads=1"]
EARLIER = "train/runs/2000-01-01_00-00-00"  # the earlier run in every case's log folder
HYDRA_OWN = (".hydra/", "train.log")  # what Hydra writes for any attempt, before ganforge runs


@dataclass
class Case:
    id: str
    args: list[str]  # may say {earlier} (the earlier run's folder), {case} (this case's folder)
    expect: list[str]  # all of these in the output (the key or file, and the fix)
    forbid: list[str] = field(default_factory=list)  # a wrong key the old message named
    env: dict[str, str | None] = field(default_factory=dict)
    hide: list[str] = field(default_factory=list)  # packages to make unimportable
    files: dict[str, bytes] = field(default_factory=dict)  # written into {case} first
    base: list[str] = field(default_factory=lambda: list(TINY))


LAST = "{earlier}/checkpoints/last.ckpt"
NO_WANDB_LOGIN = {"WANDB_API_KEY": None, "WANDB_MODE": None, "NETRC": "{case}/no-netrc"}

CASES = [
    # --- values torch or Lightning would reject (or misuse) -------------------------------------
    Case("lr_d-negative", ["optim.lr_d=-1"], ["optim.lr_d=-1 must be a number >= 0"]),
    Case("lr_g-text", ["optim.lr_g=abc"], ["optim.lr_g='abc' must be a number"]),
    Case("betas-out-of-range", ["optim.betas=[2,3]"], ["optim.betas=[2, 3] must be two numbers"]),
    Case("betas-one", ["optim.betas=[0.5]"], ["optim.betas=[0.5] must be two numbers"]),
    Case("sgd-momentum", ["optim=sgd", "optim.momentum=-0.5"], ["optim.momentum=-0.5 must be"]),
    Case("adam-eps", ["+optim.generator.eps=-1"], ["optim.generator is refused", "epsilon"]),
    Case("optim-typo", ["+optim.discriminator.lrr=1"], ["optim.discriminator is refused", "lrr"]),
    Case("seed-text", ["seed=abc"], ["seed='abc' must be an integer"]),
    Case("seed-negative", ["seed=-1"], ["seed=-1 must be an integer in [0, "]),
    Case("threads-negative", ["num_threads=-1"], ["num_threads=-1 must be a positive integer"]),
    Case("threads-zero", ["num_threads=0"], ["num_threads=0 must be a positive integer"]),
    Case(
        "n_critic-zero",
        ["system.n_critic=0"],
        ["system.n_critic=0 must be a positive integer"],
        forbid=["batches_per_step"],
    ),
    # Keys that moved from loss/ to system/: named with the new key, plain or with Hydra's `+`.
    Case("n_critic-old-key", ["loss.n_critic=5"], ["loss.n_critic is now system.n_critic"]),
    Case("gp-old-key-added", ["+loss.gp_weight=10"], ["use system.gp_weight=10"]),
    Case(
        "max_iters-zero",
        ["train.max_iters=0"],
        ["train.max_iters=0 must be a positive integer"],
        forbid=["system.max_iters"],
    ),
    Case("max_iters-text", ["train.max_iters=abc"], ["train.max_iters='abc' must be"]),
    Case("max_iters-null", ["train.max_iters=null"], ["would train forever", "train.max_iters=N"]),
    Case(
        "log_every-zero",
        ["train.log_every=0"],
        ["train.log_every=0 must be a positive integer"],
        forbid=["system.log_every"],
    ),
    Case("clip_d-negative", ["system.grad_clip_d=-1"], ["system.grad_clip_d=-1 must be"]),
    Case("clip_g-negative", ["system.grad_clip_g=-1"], ["system.grad_clip_g=-1 must be"]),
    Case("clip_g-text", ["system.grad_clip_g=big"], ["system.grad_clip_g='big' must be"]),
    Case("nan_policy", ["system.nan_policy=maybe"], ["system.nan_policy='maybe' must be"]),
    Case("max_skips-zero", ["system.max_skips=0"], ["system.max_skips=0 must be"]),
    Case("ema_decay", ["system.ema_decay=1.5"], ["system.ema_decay=1.5 must be in (0, 1)"]),
    Case("resume-value", ["resume=yes"], ["resume='yes' must be null or auto"]),
    Case("batch_size-zero", ["data.batch_size=0"], ["data.batch_size=0 must be"]),
    # --- output folders ----------------------------------------------------------------------
    Case(
        "log_dir-file",
        ["paths.log_dir={case}/a_file"],
        ["paths.log_dir={case}/a_file is a file, not a folder"],
        files={"a_file": b"not a folder"},
    ),
    Case(
        "run_dir-under-file",
        ["hydra.run.dir={case}/a_file/run"],
        ["hydra.run.dir={case}/a_file/run cannot be created: {case}/a_file is a file"],
        files={"a_file": b"not a folder"},
    ),
    Case(
        "checkpoint-dir-file",
        ["callbacks.checkpoint.dirpath={case}/a_file"],
        ["callbacks.checkpoint.dirpath={case}/a_file is a file, not a folder"],
        files={"a_file": b"not a folder"},
    ),
    Case(
        "checkpoint-dir-under-file",
        ["callbacks.checkpoint.dirpath={case}/a_file/ckpts"],
        ["callbacks.checkpoint.dirpath={case}/a_file/ckpts cannot be created"],
        files={"a_file": b"not a folder"},
    ),
    Case(
        "samples-dir-file",
        ["callbacks.samples.dirpath={case}/a_file"],
        ["callbacks.samples.dirpath={case}/a_file is a file"],
        files={"a_file": b"not a folder"},
    ),
    # --- checkpoints to resume -----------------------------------------------------------------
    Case("ckpt-directory", ["ckpt_path={earlier}/checkpoints"], ["is a directory", LAST]),
    Case("ckpt-missing", ["ckpt_path={case}/nope.ckpt"], ["ckpt_path={case}/nope.ckpt does not"]),
    Case("ckpt-empty", ["ckpt_path={case}/x.ckpt"], ["{case}/x.ckpt"], files={"x.ckpt": b""}),
    Case(
        "ckpt-random",
        ["ckpt_path={case}/x.ckpt"],
        ["CheckpointError", "{case}/x.ckpt"],
        files={"x.ckpt": bytes(range(256)) * 64},
    ),
    Case(
        "ckpt-json",
        ["ckpt_path={case}/x.ckpt"],
        ["CheckpointError", "{case}/x.ckpt"],
        files={"x.ckpt": json.dumps({"state_dict": {}, "ganforge": {}}).encode()},
    ),
    Case("ckpt-truncated", ["ckpt_path={case}/x.ckpt"], ["CheckpointError", "{case}/x.ckpt"]),
    Case(
        "ckpt-other-width",
        ["ckpt_path=" + LAST, "model.hidden=32"],
        ["CheckpointError", "hidden=16 (checkpoint) vs 32 (this run)"],
    ),
    Case(
        "ckpt-other-depth",
        ["ckpt_path=" + LAST, "model.depth=3"],
        ["CheckpointError", "depth=2 (checkpoint) vs 3 (this run)"],
    ),
    Case(
        "resume-nothing-left",
        ["ckpt_path=" + LAST, "train.max_iters=4"],
        ["train.max_iters=4 but", "already at iteration 4", "nothing left to train"],
    ),
    Case(
        "resume-behind",
        ["ckpt_path=" + LAST, "train.max_iters=2"],
        ["train.max_iters=2 but", "already at iteration 4"],
    ),
    # --- loggers and resources -----------------------------------------------------------------
    Case(
        "wandb-no-login",
        ["logger=wandb"],
        ["logger=wandb needs a W&B login", "wandb login", "WANDB_API_KEY", "mode=offline"],
        env=NO_WANDB_LOGIN,
    ),
    Case(
        "wandb-env-online",
        ["logger=wandb"],
        ["WANDB_MODE=online", "wandb login"],
        env={**NO_WANDB_LOGIN, "WANDB_MODE": "online"},
    ),
    Case(
        "wandb-bad-mode",
        ["logger=wandb", "logger.wandb.mode=sometimes"],
        ["logger.wandb.mode='sometimes' must be one of"],
    ),
    Case(
        "tensorboard-missing",
        ["logger=tensorboard"],
        ["logger=tensorboard needs the tensorboard package", 'pip install "ganforge[tensorboard]"'],
        hide=["tensorboard", "tensorboardX"],
    ),
    Case(
        "inception-weights-missing",
        ["callbacks=eval", "metrics.inception_weights={case}/none.pth"],
        ["metrics.inception_weights={case}/none.pth does not exist"],
        base=["data=mnist5k", "model=dcgan", "model.base_width=4", "train.max_iters=4"],
    ),
    Case(
        "dataset-missing",
        ["data=mnist", "data.download=false", "data.root={case}/empty"],
        ["data.root", "data.download"],
        base=["model=mlp", "train.max_iters=4", "logger=none"],
    ),
]


def fill(text: str, case_dir: Path) -> str:
    return text.replace("{earlier}", str(case_dir / "logs" / EARLIER)).replace(
        "{case}", str(case_dir)
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case's result, with its log folder's contents before and after."""
    root = tmp_path_factory.mktemp("bad_inputs")
    earlier = root / "earlier"
    train(compose_train(earlier, *TINY))  # a real run: config, CSV, checkpoints at iteration 4
    assert (
        torch.load(earlier / "checkpoints" / "last.ckpt", weights_only=True)["ganforge"][
            "iteration"
        ]
        == 4
    )
    specs, befores = [], {}
    for case in CASES:
        case_dir = root / case.id
        shutil.copytree(earlier, case_dir / "logs" / EARLIER)
        (case_dir / "empty").mkdir()
        for name, data in case.files.items():
            (case_dir / name).write_bytes(data)
        if case.id == "ckpt-truncated":
            full = (earlier / "checkpoints" / "last.ckpt").read_bytes()
            (case_dir / "x.ckpt").write_bytes(full[: len(full) // 2])
        befores[case.id] = snapshot(case_dir)
        env = {
            "GANFORGE_LOG_DIR": str(case_dir / "logs"),
            "GANFORGE_DATA_DIR": str(case_dir / "data"),
        }
        env.update({k: None if v is None else fill(v, case_dir) for k, v in case.env.items()})
        argv = [fill(a, case_dir) for a in [*case.base, *case.args]]
        specs.append({"id": case.id, "argv": argv, "env": env, "hide": case.hide})
    (root / "cases.json").write_text(json.dumps(specs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(TESTS / "commands_driver.py"), str(root / "cases.json")]
    cmd.append(str(root / "results.json"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((root / "results.json").read_text())
    return {
        case.id: {
            **results[case.id],
            "dir": root / case.id,
            "before": befores[case.id],
            "after": snapshot(root / case.id),
        }
        for case in CASES
    }


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error_and_writes_nothing(outcome: dict, case: Case) -> None:
    got = outcome[case.id]
    output, case_dir = got["output"], got["dir"]
    assert "Traceback" not in output, output[-3000:]
    assert got["code"] == 2, output[-3000:]
    for text in case.expect:
        assert fill(text, case_dir) in output, output[-3000:]
    for text in case.forbid:
        assert text not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "Error: " in line]
    assert len(errors) == 1, errors  # one message
    before, after = got["before"], got["after"]
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"changed or removed: {changed}"
    new = sorted(set(after) - set(before))
    # Only Hydra's own record of the attempt (in the new run folder), nothing ganforge writes.
    unexpected = [p for p in new if not any(part in p for part in HYDRA_OWN)]
    assert not unexpected, unexpected


def run_cli(log_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANFORGE_LOG_DIR": str(log_dir)}
    cmd = [sys.executable, "-m", "ganforge.train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_driver_agrees_with_separate_processes(outcome: dict, tmp_path: Path) -> None:
    """The in-one-process driver reports what a real `ganforge-train` process does."""
    for case_id, args in [("n_critic-zero", ["system.n_critic=0"]), ("seed-text", ["seed=abc"])]:
        proc = run_cli(tmp_path, *TINY, *args)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
        message = next(line for line in output.splitlines() if "Error: " in line)
        driver = next(line for line in outcome[case_id]["output"].splitlines() if "Error: " in line)
        assert message.split(" - ", 1)[1] == driver.split(" - ", 1)[1]


@pytest.mark.slow
def test_sweep_reports_each_bad_job_and_goes_on(tmp_path: Path) -> None:
    """`-m` over bad and good values: each bad job logs its one message, the good job after it
    still trains, and the sweep exits 2 listing the failed jobs."""
    proc = run_cli(tmp_path, "-m", *TINY, "optim.lr_d=-1,abc,1e-3")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    assert "optim.lr_d=-1 must be a number >= 0" in output
    assert "optim.lr_d='abc' must be a number >= 0" in output
    assert "2 job(s) stopped on a user error" in output
    (good,) = tmp_path.glob("train/multiruns/*/2/checkpoints/last.ckpt")
    assert torch.load(good, weights_only=True)["ganforge"]["iteration"] == 4
    assert not list(tmp_path.glob("train/multiruns/*/[01]/checkpoints"))


def test_a_preset_setting_a_moved_key_is_refused(tmp_path: Path) -> None:
    """A user's own preset that still sets loss.n_critic composes (Hydra merges it), and would
    be ignored: train() refuses it, naming the new key, before anything is written."""
    cfg = compose_train(tmp_path / "run", *TINY, "+loss.n_critic=5")
    with pytest.raises(
        ConfigError, match=r"loss\.n_critic is now system\.n_critic.*system\.n_critic=5"
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()
