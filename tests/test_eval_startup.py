"""`ganforge-eval` says what it will do before it loads torch, Lightning or the checkpoint, then
names each phase with its count and time (#23: it used to print nothing for its first ~30 s);
`ganforge-sample` says its first line before torch too (it took ~16 s)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ganforge.cli import config_dir

# Run in a fresh interpreter: a hook reports the first import of torch on stdout, where Hydra's
# job logging writes the command's lines, so their order is the order they happened in.
DRIVER = """
import importlib.abc, sys

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            print("IMPORT torch", flush=True)
        return None

sys.meta_path.insert(0, Watch())
from ganforge.{command} import main
sys.argv = ["ganforge-{command}", *sys.argv[1:]]
main()
"""


def lines_before_torch(tmp_path: Path, command: str, *args: str) -> list[str]:
    """What `ganforge-<command> args` prints before it first imports torch (which it must)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(command=command), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # line by line, as they are printed
            lines.append(line.rstrip("\n"))
            if line.startswith("IMPORT torch"):
                break  # what came before is all this test asks about
    finally:
        proc.kill()
        proc.wait()
    assert lines and lines[-1] == "IMPORT torch", lines
    return lines[:-1]


def test_the_first_line_comes_before_torch_is_imported(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "last.ckpt"
    lines = lines_before_torch(tmp_path, "eval", f"ckpt={ckpt}", "metrics.n_samples=100")
    said = [line for line in lines if "ganforge-eval:" in line]
    assert len(said) == 1, lines
    assert f"ckpt={ckpt}:" in said[0]
    assert "metrics.names=[fid,kid,pr,stacked_modes,modes2d]" in said[0]
    assert "metrics.n_samples=100, metrics.reference_count=250;" in said[0]


def test_the_first_line_precedes_reading_the_checkpoint(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    from ganforge import checkpoint
    from ganforge import eval as eval_mod

    class Stop(Exception):
        pass

    said_before: list[list[str]] = []

    def load(*args, **kwargs):
        said_before.append([r.getMessage() for r in caplog.records])
        raise Stop

    monkeypatch.setattr(checkpoint, "load", load)
    cfg = OmegaConf.load(config_dir() / "eval.yaml")
    del cfg["defaults"], cfg["hydra"]
    cfg.metrics = OmegaConf.merge(
        OmegaConf.load(config_dir() / "metrics" / "default.yaml"), cfg.metrics
    )
    cfg.ckpt, cfg.metrics.reference_count = str(tmp_path / "x.ckpt"), None
    with caplog.at_level(logging.INFO, logger="ganforge"), pytest.raises(Stop):
        eval_mod.evaluate_checkpoint(cfg)
    assert said_before == [
        [
            f"ganforge-eval: ckpt={tmp_path / 'x.ckpt'}: metrics.names="
            "[fid,kid,pr,stacked_modes,modes2d] (those its data can be scored by), "
            "metrics.n_samples=250, metrics.reference_count=null (the whole split); loading "
            "torch, Lightning and the checkpoint"
        ]
    ]


def test_sample_says_its_first_line_before_torch_is_imported(tmp_path: Path) -> None:
    ckpt, out = tmp_path / "run" / "last.ckpt", tmp_path / "grid.png"
    lines = lines_before_torch(tmp_path, "sample", f"ckpt={ckpt}", "n=16", f"out={out}")
    said = [line for line in lines if "ganforge-sample:" in line]
    assert len(said) == 1, lines
    assert f"ckpt={ckpt}, n=16, out={out}; loading torch" in said[0]


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_importing_the_command_loads_neither_torch_nor_lightning(command: str) -> None:
    code = (
        f"import sys, ganforge.{command}; "
        "print(sorted(m for m in ('torch', 'lightning', 'ganforge.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
