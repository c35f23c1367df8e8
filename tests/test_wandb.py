"""Weights & Biases in offline mode (no account, no network): the run directory holds the
resolved config, metrics and checkpoint artifact (in its .wandb records) and the sample images
(files/media); a resumed run continues the same W&B run. The mode follows W&B's convention: the
config's explicit `logger.wandb.mode`, else $WANDB_MODE, else online (which needs a login)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train
from ganforge.errors import ConfigError
from ganforge.preflight import check_loggers, wandb_mode
from ganforge.train import train

TINY = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "debug=smoke",
    "logger=wandb",  # mode null: $WANDB_MODE (offline in the test) decides
]


def run_records(run: Path, *needles: bytes, timeout_s: float = 60.0) -> bytes:
    """The run's .wandb records once they hold every needle. wandb's service process writes them
    asynchronously and can still be flushing after `finish()` returns on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        (records,) = run.glob("*.wandb")
        raw = records.read_bytes()
        if all(n in raw for n in needles) or time.monotonic() > deadline:
            return raw
        time.sleep(0.5)


def offline_runs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_offline_run_holds_config_metrics_images_and_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose_train(tmp_path / "a", *TINY, "seed=7", "logger.wandb.log_model=true"))
    (run,) = offline_runs(tmp_path / "a")
    run_id = run.name.rsplit("-", 1)[-1]
    images = list((run / "files" / "media" / "images").glob("samples_*.png"))
    assert images, "sample grids are logged as W&B images"
    raw = run_records(
        run, b"train/d_loss", b"train/g_loss", b"nan_policy", f"model-{run_id}".encode()
    )
    assert b"train/d_loss" in raw and b"train/g_loss" in raw
    assert f"model-{run_id}".encode() in raw  # last.ckpt as a model artifact (log_model)
    # The resolved config (offline, it lives in the run's records until `wandb sync`).
    assert b"toy_ring" in raw and b"nan_policy" in raw
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["ganforge"]["wandb_run_id"] == run_id

    train(compose_train(tmp_path / "b", *TINY, "train.max_iters=6", f"ckpt_path={ckpt}"))
    (resumed,) = offline_runs(tmp_path / "b")
    assert resumed.name.endswith(run_id)  # the same W&B run, continued


def test_wandb_mode_follows_the_config_then_wandb_mode_then_online(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(OmegaConf.create({"mode": None})) == "offline"
    assert wandb_mode(OmegaConf.create({"mode": "disabled"})) == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(OmegaConf.create({"mode": None})) == "online"


def test_online_wandb_without_a_login_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match=r"needs a W&B login.*wandb login.*mode=offline"):
        train(compose_train(tmp_path, *TINY))
    assert not (tmp_path / "checkpoints").exists()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # with a key, the check lets it through
    check_loggers(compose_train(tmp_path, *TINY))
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "offline")  # or offline, with no key
    check_loggers(compose_train(tmp_path, *TINY))


# --- what a W&B user sees: names, group, job type, tags, config once, summary -----------------
BLOCK = 32 * 1024  # W&B's record file: LevelDB-style log blocks of 32 KiB, 7-byte record headers


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file (what `wandb sync` uploads)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, out, parts = 7, [], b""
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        if length == 0 and kind == 0:
            break
        parts += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def run_facts(records: list) -> dict:
    """The run record (name, group, ...), config keys and summary of an offline run."""
    facts: dict = {"config": [], "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            facts.update(
                name=r.run.display_name,
                group=r.run.run_group,
                job_type=r.run.job_type,
                tags=list(r.run.tags),
            )
        elif kind == "config":
            facts["config"] += [u.key for u in r.config.update if u.key != "_wandb"]
        elif kind == "summary":
            facts["summary"].update({u.key: u.value_json for u in r.summary.update if u.key})
    return facts


def run_cli(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    import os
    import subprocess

    environ = {
        **os.environ,
        "HOME": str(tmp_path / "home"),  # a new user: no W&B login, no settings
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "GANFORGE_LOG_DIR": str(tmp_path / "logs"),
        **(env or {}),
    }
    environ.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [*args], env=environ, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


CLI_TINY = [*TINY[:4], "train.max_iters=20", "train.log_every=5", "num_threads=1"]
CLI_TINY += ["callbacks.evaluation.every_n_iters=10", "callbacks.plots=null"]
CLI_TINY += ["callbacks.samples=null", "callbacks.health=null", "logger=wandb"]


@pytest.mark.slow
def test_a_multirun_is_a_wandb_group_of_runs_named_by_what_differs(tmp_path: Path) -> None:
    import sys

    cmd = [sys.executable, "-m", "ganforge.train", "-m", *CLI_TINY, "loss=hinge,non_saturating"]
    output = run_cli(tmp_path, *cmd)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    facts = {}
    for job in ("0", "1"):
        (records,) = (sweep / job / "wandb").glob("offline-run-*/*.wandb")
        run_records(records.parent, b"best/val/high_quality")  # flushed
        facts[job] = run_facts(wandb_records(records))
        assert (sweep / job / "csv" / "metrics.csv").is_file()  # CSV kept beside W&B
    assert [facts[j]["name"] for j in ("0", "1")] == ["loss=hinge", "loss=non_saturating"]
    assert facts["0"]["group"] == facts["1"]["group"] == f"train-{sweep.name}"
    assert facts["0"]["job_type"] == "train"
    assert facts["0"]["tags"] == ["mlp", "hinge", "toy_ring"]
    # The config once, nested: no flat copy of the system's settings beside it.
    config = facts["0"]["config"]
    assert "system" in config and "optim" in config and "n_critic" not in config
    assert len(config) == len(set(config))
    summary = facts["0"]["summary"]
    # (reverse KL is inf in so short a run: no best; the modes' share is 0 from the first)
    assert summary["best/val/high_quality_iteration"] == "10" and float(summary["wall_s"]) > 0
    assert str(sweep / "0") in summary["run_dir"]
    # The run's own summary, and the multirun's table with the report command.
    assert "finished 20 iterations in " in output and "val/reverse_kl" in output
    assert f"run folder: {sweep / '0'}" in output
    assert "multirun: 2 job(s), all with " in output
    assert f"compare them: ganforge-report {sweep}" in output


def agent_command(sweep_yaml: Path, values: dict) -> list[str]:
    """The command line `wandb agent` builds for one run of the sweep (wandb_agent.py's
    _command_run, with W&B's own create_sweep_command_args)."""
    import yaml
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    sweep = yaml.safe_load(sweep_yaml.read_text())
    command = {"args": {k: {"value": v} for k, v in values.items()}, "program": sweep["program"]}
    macros = sweep_utils.create_sweep_command_args(command)
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
    out: list[str] = []
    for part in sweep_utils.create_sweep_command(sweep["command"]):
        part = str(part)
        out += macros.get(part[2:-1]) or [] if part.startswith("${") else [part]
    return out


SWEEP_YAML = Path(__file__).parents[1] / "scripts" / "wandb_sweep.yaml"


def test_the_sweep_recipe_names_real_keys_and_options() -> None:
    """Every parameter of scripts/wandb_sweep.yaml passes ganforge-train's override check, in
    both forms an agent may pass (key=value and --key=value)."""
    import yaml

    from ganforge import overrides
    from ganforge.train import config_dir

    params = yaml.safe_load(SWEEP_YAML.read_text())["parameters"]
    values = {
        k: p["values"][0] if "values" in p else p.get("value", p.get("min"))
        for k, p in params.items()
    }
    argv = agent_command(SWEEP_YAML, values)
    assert argv[:2] == ["/usr/bin/env", "ganforge-train"]
    assert f"optim.lr_d={values['optim.lr_d']}" in argv
    overrides.check_argv(overrides.normalize(argv[2:]), config_dir(), "train", "ganforge-train")
    hyphens = [f"--{k}={v}" for k, v in values.items()]
    overrides.check_argv(overrides.normalize(hyphens), config_dir(), "train", "ganforge-train")


@pytest.mark.slow
def test_wandb_agent_command_line_trains_a_run(tmp_path: Path) -> None:
    """The exact command line the agent runs (scripts/wandb_sweep.yaml's `command`), with tiny
    values as a sweep's constant parameters would pass them."""
    import yaml

    values: dict = {"loss": "hinge", "optim.lr_d": 0.0005, "optim.lr_g": 0.0002}
    values.update({k.split("=")[0]: k.split("=", 1)[1] for k in CLI_TINY if "=" in k})
    del values["logger"]  # the recipe's command sets it
    argv = agent_command(SWEEP_YAML, values)
    # What the agent writes before it runs the command (wandb_agent.py: SWEEP_PARAM_PATH).
    params = tmp_path / "sweep-params.yaml"
    params.write_text(yaml.safe_dump({k: {"value": v} for k, v in values.items()}))
    output = run_cli(tmp_path, *argv, env={"WANDB_SWEEP_PARAM_PATH": str(params)})
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    (records,) = (run / "wandb").glob("offline-run-*/*.wandb")
    run_records(records.parent, b"wall_s")  # flushed
    facts = run_facts(wandb_records(records))
    # Named by the sweep's parameters, not the recipe's fixed experiment=toy_ring logger=wandb.
    assert facts["name"].startswith("loss=hinge,optim.lr_d=0.0005,optim.lr_g=0.0002,data=")
    assert "finished 20 iterations" in output


@pytest.fixture
def hydra_job(monkeypatch: pytest.MonkeyPatch):
    """HydraConfig as inside a job: (overrides, mode, job folder, command line) -> the config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from ganforge.train import config_dir

    def make(overrides: list[str], mode: str, output_dir: str, argv: list[str]):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = mode
            cfg.hydra.runtime.output_dir = output_dir
            cfg.hydra.runtime.choices.experiment = None
        HydraConfig.instance().set_config(cfg)
        monkeypatch.setattr("sys.argv", ["ganforge-train", *argv])
        return cfg

    yield make
    HydraConfig.instance().cfg = None  # type: ignore[assignment]


def test_wandb_names_group_and_tags_follow_the_job(hydra_job) -> None:
    from ganforge.loggers import wandb_run

    job = ["loss=hinge", "seed=2", "logger=wandb", "paths.log_dir=/tmp/x"]
    cfg = hydra_job(
        job,
        "MULTIRUN",
        "/runs/train/multiruns/2026-01-01_10-00-00/3",
        ["-m", "loss=hinge,lsgan", "seed=2", "logger=wandb"],
    )
    assert wandb_run(cfg, cfg.logger.wandb) == {
        "name": "loss=hinge",  # what differs between the jobs: the swept key
        "group": "train-2026-01-01_10-00-00",
        "tags": ["dcgan", "hinge", "mnist5k"],
    }
    cfg = hydra_job(job, "RUN", "/runs/train/runs/x", [*job])
    run = wandb_run(cfg, cfg.logger.wandb)
    assert run["name"] == "loss=hinge,seed=2" and "group" not in run  # paths, loggers left out
    cfg.logger.wandb.name, cfg.logger.wandb.tags = "mine", []
    assert wandb_run(cfg, cfg.logger.wandb) == {}  # set in the config: kept


def test_tensorboard_gets_the_settings_beside_the_final_metrics(tmp_path: Path) -> None:
    """What the HParams tab is given (Lightning writes it with TensorBoardLogger.log_hyperparams
    when metrics come along); `test_tensorboard_hparams_tab` reads the event files."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from ganforge.loggers import hparams, log_summary

    class Recorder(TensorBoardLogger):
        def log_hyperparams(self, params, metrics=None):  # type: ignore[override]
            self.got = (params, metrics)

    tb = object.__new__(Recorder)  # no tensorboard package needed to record the call
    cfg = compose_train(tmp_path, *TINY[:4], "loss=hinge")
    final = {"val/fid": 80.0, "train/g_loss": 0.5, "health/d_gap": 0.1, "train/iterations": 4}
    log_summary([tb], cfg, {"final": final, "best": {}, "health": []})
    params, metrics = tb.got
    assert params == hparams(cfg)
    assert params["loss.name"] == "hinge" and params["optim.lr_d"] == cfg.optim.lr_d
    assert params["model.hidden"] == 16 and params["seed"] == 0
    assert all(k.count(".") <= 1 for k in params)  # not system.g_optimizer.lr again
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())
    assert metrics == {
        "final/val/fid": 80.0,
        "final/train/g_loss": 0.5,
        "final/train/iterations": 4,
    }


def test_tensorboard_hparams_tab(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    train(compose_train(tmp_path, *TINY, "logger=tensorboard"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    session, metrics = {}, []
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            session = data.session_start_info.hparams
        if data.HasField("experiment"):
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    assert session["loss.name"].string_value == "non_saturating"
    assert "final/train/g_loss" in metrics and "final/train/iterations" in metrics
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # CSV beside TensorBoard
