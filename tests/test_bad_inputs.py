"""Bad input to `ganforge-eval` and `ganforge-sample`, bad or crafted checkpoints for all three
commands: exit code 2, one message naming the key or file the user typed, no traceback, and
nothing written or overwritten — checked case by case. And a checkpoint is data, not code: the
crafted ones (a pickled object whose `__reduce__` creates a marker file, Hydra `_target_`s in its
record, a dataset name that is an absolute YAML path, a CIFAR root full of malicious pickles) go
through `ganforge-train ckpt_path=`, `ganforge-eval ckpt=` and `ganforge-sample ckpt=`, with and
without TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, and the marker must never appear.

Every case gets its own folder (its crafted files, its outputs, GANFORGE_DATA_DIR and
GANFORGE_LOG_DIR) which must be byte for byte as it was afterwards, except for the paths the case
lists as its own output. The cases run through the console entry points in one subprocess
(tests/commands_driver.py: torch and Lightning are imported once, not once per case);
`test_driver_agrees_with_separate_processes` runs real console processes for a few of them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import compose_train
from fakes import write_cifar
from ganforge.train import train

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent  # the console scripts of this environment
RING = ["data=toy_ring", "model=mlp", "model.hidden=16", "model.depth=2", "train.max_iters=20"]
RING += ["callbacks=default", "logger=none"]
ERROR_LINE = re.compile(r"\b[A-Z]\w*Error: ")

Setup = Callable[[Path, dict[str, Path]], None]


@dataclass
class Case:
    id: str
    command: str  # ganforge-train | ganforge-eval | ganforge-sample
    args: list[str]  # may say {case} (this case's folder), {ring} / {dcgan} / {cifar} (checkpoints)
    expect: list[str]  # all of these in the one error line (the key or file, the fix)
    setup: Setup | None = None  # writes this case's files into {case} first
    env: dict[str, str] = field(default_factory=dict)
    codes: tuple[int, ...] = (2,)  # allowed exit codes (0 where a command may ignore a payload)
    own: tuple[str, ...] = ()  # paths under {case} the command may create (its real output)


class Marker:
    """Unpickling this calls `open(path, "w")`, creating the file: a stand-in for any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# --- crafted files ----------------------------------------------------------------------------


def write(name: str, data: bytes) -> Setup:
    def setup(case: Path, ckpts: dict[str, Path]) -> None:
        (case / name).parent.mkdir(parents=True, exist_ok=True)
        (case / name).write_bytes(data)

    return setup


def from_ring(edit: Callable[[dict[str, Any], Path], Any], base: str = "ring") -> Setup:
    """{case}/x.ckpt: a real checkpoint (the toy ring's by default), edited by
    `edit(checkpoint, case)`."""

    def setup(case: Path, ckpts: dict[str, Path]) -> None:
        raw = copy.deepcopy(torch.load(ckpts[base], weights_only=True))
        edit(raw, case)
        torch.save(raw, case / "x.ckpt")

    return setup


def ring_bytes(transform: Callable[[bytes], bytes]) -> Setup:
    def setup(case: Path, ckpts: dict[str, Path]) -> None:
        (case / "x.ckpt").write_bytes(transform(ckpts["ring"].read_bytes()))

    return setup


def saved(obj: Any) -> Setup:
    def setup(case: Path, ckpts: dict[str, Path]) -> None:
        torch.save(obj, case / "x.ckpt")

    return setup


def g_args(**changes: Any) -> Setup:
    return from_ring(lambda raw, case: raw["ganforge"]["generator"]["init_args"].update(changes))


empty_record = from_ring(lambda raw, case: raw.update(ganforge={}))


def record(**changes: Any) -> Setup:
    return from_ring(lambda raw, case: raw["ganforge"].update(changes))


def data_args(**changes: Any) -> Setup:
    return from_ring(lambda raw, case: raw["ganforge"]["meta"]["data_args"].update(changes))


def nan_generators(raw: dict[str, Any], case: Path) -> None:
    for key, value in raw["state_dict"].items():
        if key.startswith(("G.", "G_ema.")):
            value.fill_(float("nan"))


def evil_cifar(folder: Path, marker: Path) -> None:
    """A CIFAR-10 folder whose every batch runs `open(marker, "w")` when unpickled."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps(Marker(marker)))


def both(*setups: Setup) -> Setup:
    def setup(case: Path, ckpts: dict[str, Path]) -> None:
        for s in setups:
            s(case, ckpts)

    return setup


def file_here(name: str) -> Setup:
    return write(name, b"an ordinary file\n")


# --- the cases ---------------------------------------------------------------------------------

X = "{case}/x.ckpt"
SAMPLE = ["out={case}/grid.png"]
EVAL = ["out={case}/r.json"]


def sample(id: str, args: list[str], expect: list[str], setup: Setup | None = None, **kw) -> Case:
    return Case(f"sample-{id}", "ganforge-sample", [*SAMPLE, *args], expect, setup, **kw)


def evaluate(id: str, args: list[str], expect: list[str], setup: Setup | None = None, **kw) -> Case:
    return Case(f"eval-{id}", "ganforge-eval", [*EVAL, *args], expect, setup, **kw)


CASES = [
    # --- checkpoints that are not ganforge checkpoints --------------------------------------
    sample("ckpt-empty", [f"ckpt={X}"], [f"ckpt={X}", "corrupt"], write("x.ckpt", b"")),
    sample(
        "ckpt-truncated", [f"ckpt={X}"], [f"ckpt={X}", "truncated"], ring_bytes(lambda b: b[:2000])
    ),
    sample(
        "ckpt-random",
        [f"ckpt={X}"],
        [f"ckpt={X}", "corrupt"],
        write("x.ckpt", np.random.default_rng(0).bytes(4096)),
    ),
    sample("ckpt-json", [f"ckpt={X}"], [f"ckpt={X}", "corrupt"], write("x.ckpt", b'{"a": 1}')),
    sample("ckpt-list", [f"ckpt={X}"], [f"ckpt={X}", "not a ganforge checkpoint"], saved([1, 2])),
    sample(
        "ckpt-no-record",
        [f"ckpt={X}"],
        [f"ckpt={X}", "not a ganforge checkpoint"],
        saved({"state_dict": {}, "epoch": 0}),
    ),
    sample("ckpt-missing", ["ckpt={case}/nope.ckpt"], ["ckpt={case}/nope.ckpt", "does not exist"]),
    sample("ckpt-directory", ["ckpt={case}"], ["ckpt={case}", "is a directory"]),
    # --- a malformed ganforge record --------------------------------------------------------
    sample("record-empty", [f"ckpt={X}"], [f"ckpt={X}", "empty ganforge record"], empty_record),
    sample(
        "record-not-a-dict",
        [f"ckpt={X}"],
        [f"ckpt={X}", "not a ganforge checkpoint"],
        from_ring(lambda raw, case: raw.update(ganforge="a string")),
    ),
    sample("record-iteration", [f"ckpt={X}"], [f"ckpt={X}", "iteration=-1"], record(iteration=-1)),
    sample("init-args-unknown", [f"ckpt={X}"], [f"ckpt={X}", "'widht'"], g_args(widht=8)),
    sample(
        "init-args-huge", [f"ckpt={X}"], [f"ckpt={X}", "hidden=1000000000"], g_args(hidden=10**9)
    ),
    sample("init-args-negative", [f"ckpt={X}"], [f"ckpt={X}", "hidden=-4"], g_args(hidden=-4)),
    sample("init-args-list", [f"ckpt={X}"], [f"ckpt={X}", "hidden=[16]"], g_args(hidden=[16])),
    sample("init-args-deep", [f"ckpt={X}"], [f"ckpt={X}", "far larger"], g_args(depth=60000)),
    sample("init-args-wider", [f"ckpt={X}"], [f"ckpt={X}", "G.net.0.weight"], g_args(hidden=32)),
    sample(
        "weights-missing",
        [f"ckpt={X}"],
        [f"ckpt={X}", "do not fit"],
        from_ring(lambda raw, case: raw["state_dict"].pop("G.net.0.bias")),
    ),
    sample(
        "class-not-a-model",
        [f"ckpt={X}"],
        [f"ckpt={X}", "collections.OrderedDict", "refusing"],
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"].update(
                {"class": "collections.OrderedDict"}
            )
        ),
    ),
    # A class outside ganforge.models: refused unless the allowed_classes option names it, and
    # then still only a model class (an nn.Module) is built.
    sample(
        "class-outside-not-allowed",
        [f"ckpt={X}"],
        [f"ckpt={X}", "'mypkg.nets.Generator'", "allowed_classes=[mypkg.nets.Generator]"],
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"].update({"class": "mypkg.nets.Generator"})
        ),
    ),
    sample(
        "class-allowed-not-importable",
        [f"ckpt={X}", "++allowed_classes=[mypkg.nets.Generator]"],
        [f"ckpt={X}", "'mypkg.nets.Generator'", "cannot be imported here", "PYTHONPATH"],
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"].update({"class": "mypkg.nets.Generator"})
        ),
    ),
    sample(
        "class-allowed-not-a-model",
        [f"ckpt={X}", "++allowed_classes=[builtins.open]"],
        [f"ckpt={X}", "'builtins.open' is not a model class"],
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"].update({"class": "builtins.open"})
        ),
    ),
    sample(
        "allowed-classes-not-paths",
        [f"ckpt={X}", "++allowed_classes=[5]"],
        ["allowed_classes=[5] must be a list of model class paths"],
    ),
    sample("weights-nan", [f"ckpt={X}"], [f"ckpt={X}", "non-finite"], from_ring(nan_generators)),
    sample(
        "weights-nan-raw",
        [f"ckpt={X}", "ema=false"],
        [f"ckpt={X}", "G.net.0.weight", "non-finite"],
        from_ring(nan_generators),
    ),
    evaluate(
        "ckpt-truncated", [f"ckpt={X}"], [f"ckpt={X}", "truncated"], ring_bytes(lambda b: b[:-100])
    ),
    evaluate("weights-nan", [f"ckpt={X}"], [f"ckpt={X}", "non-finite"], from_ring(nan_generators)),
    evaluate("ckpt-directory", ["ckpt={case}"], ["ckpt={case}", "is a directory"]),
    # --- ganforge-eval options ----------------------------------------------------------------
    evaluate(
        "n-samples-text", ["ckpt={ring}", "metrics.n_samples=abc"], ["metrics.n_samples='abc'"]
    ),
    evaluate(
        "n-samples-huge",
        ["ckpt={ring}", "metrics.n_samples=100000000"],
        ["metrics.n_samples=100000000", "smaller"],
    ),
    evaluate("n-samples-one", ["ckpt={ring}", "metrics.n_samples=1"], ["metrics.n_samples=1"]),
    evaluate("batch-size-zero", ["ckpt={ring}", "metrics.batch_size=0"], ["metrics.batch_size=0"]),
    evaluate(
        "names-unknown", ["ckpt={ring}", "metrics.names=[fid,nope]"], ["metrics.names", "nope"]
    ),
    evaluate("resize-unknown", ["ckpt={ring}", "metrics.resize=area"], ["metrics.resize='area'"]),
    evaluate("ema-text", ["ckpt={ring}", "ema=maybe"], ["ema='maybe'", "true or false"]),
    evaluate("device-unknown", ["ckpt={ring}", "device=tpu"], ["device='tpu'", "cpu"]),
    *(
        []
        if torch.cuda.is_available()
        else [
            evaluate("device-cuda", ["ckpt={ring}", "device=cuda"], ["device=cuda", "device=cpu"])
        ]
    ),
    Case(
        "eval-out-under-a-file",
        "ganforge-eval",
        ["ckpt={ring}", "out={case}/file.txt/r.json"],
        ["out={case}/file.txt/r.json", "is a file"],
        file_here("file.txt"),
    ),
    Case(
        "eval-out-directory",
        "ganforge-eval",
        ["ckpt={ring}", "out={case}"],
        ["out={case}", "directory"],
    ),
    # --- ganforge-eval's reference data -------------------------------------------------------
    evaluate("data-unknown-key", ["ckpt={ring}", "+data.bogus=1"], ["data.bogus", "data=toy_ring"]),
    evaluate(
        "data-root-not-an-option", ["ckpt={ring}", "data.root={case}"], ["data.root", "toy_ring"]
    ),
    evaluate(
        "data-cifar-missing",
        ["ckpt={cifar}", "data.root={case}/nothing"],  # download=false: the checkpoint's
        ["data.root={case}/nothing", "data.download=false"],
    ),
    evaluate(
        "data-mnist-missing",
        ["ckpt={dcgan}", "data=mnist", "data.root={case}/nothing", "data.download=false"],
        ["data.root={case}/nothing"],
    ),
    evaluate(
        "data-cifar-corrupt-batch",
        ["ckpt={cifar}", "data=cifar10", "data.root={case}/c", "data.download=false"],
        ["data_batch_1", "not a CIFAR-10 pickle batch"],
        both(
            lambda case, ckpts: write_cifar(case / "c", 4),
            write("c/cifar-10-batches-py/data_batch_1", b"garbage"),
        ),
    ),
    evaluate(
        "data-shape-mismatch",
        ["ckpt={ring}", "data=mnist5k"],
        ["ckpt={ring}", "draws samples of shape (2,)", "data=mnist5k", "data=toy_ring"],
    ),
    evaluate(
        "ckpt-unknown-dataset",
        [f"ckpt={X}"],
        [f"ckpt={X}", "data='imagenet'", "data=NAME"],
        from_ring(lambda raw, case: raw["ganforge"]["meta"].update(data="imagenet")),
    ),
    evaluate(
        "ckpt-data-args-absurd",
        [f"ckpt={X}"],
        [f"ckpt={X}", "n_samples=1000000000000"],
        data_args(n_samples=10**12),
    ),
    evaluate(
        "ckpt-data-args-type", [f"ckpt={X}"], [f"ckpt={X}", "radius='big'"], data_args(radius="big")
    ),
    evaluate(
        "ckpt-data-args-unknown",
        [f"ckpt={X}"],
        [f"ckpt={X}", "'shell'"],
        data_args(shell="rm -rf /"),
    ),
    # --- ganforge-sample options --------------------------------------------------------------
    sample("n-text", ["ckpt={ring}", "n=abc"], ["n='abc'", "positive integer"]),
    sample("n-zero", ["ckpt={ring}", "n=0"], ["n=0"]),
    sample("n-huge", ["ckpt={ring}", "n=1000000"], ["n=1000000"]),
    sample("seed-text", ["ckpt={ring}", "seed=abc"], ["seed='abc'"]),
    sample("steps-one", ["ckpt={ring}", "interpolate=true", "steps=1"], ["steps=1"]),
    sample("label-unconditional", ["ckpt={ring}", "label=3"], ["label=3", "not class-conditional"]),
    sample("ema-number", ["ckpt={ring}", "ema=2"], ["ema=2", "true or false"]),
    Case(
        "sample-out-under-a-file",
        "ganforge-sample",
        ["ckpt={ring}", "out={case}/file.txt/grid.png"],
        ["out={case}/file.txt/grid.png", "is a file"],
        file_here("file.txt"),
    ),
    Case(
        "sample-out-directory",
        "ganforge-sample",
        ["ckpt={ring}", "out={case}"],
        ["out={case}", "directory"],
    ),
    Case(
        "sample-out-extension",
        "ganforge-sample",
        ["ckpt={ring}", "out={case}/grid.xyz"],
        ["out={case}/grid.xyz", "'.xyz'", ".png"],
    ),
    Case(
        "sample-out-exists",
        "ganforge-sample",
        ["ckpt={ring}", "out={case}/grid.png"],
        ["out={case}/grid.png", "overwrite=true"],
        write("grid.png", b"the user's own picture"),
    ),
    # --- resuming training from a checkpoint that does not fit ---------------------------------
    Case(
        "train-resume-foreign-architecture",
        "ganforge-train",
        [*RING, "ckpt_path={dcgan}", "hydra.run.dir={case}/run"],
        ["ckpt_path={dcgan}"],
        own=("run",),
    ),
    Case(
        "train-resume-truncated",
        "ganforge-train",
        [*RING, f"ckpt_path={X}", "hydra.run.dir={case}/run"],
        [f"ckpt_path={X}"],
        ring_bytes(lambda b: b[: len(b) // 2]),
        own=("run",),
    ),
]


# --- a checkpoint is never code ------------------------------------------------------------------


def in_meta(raw: dict[str, Any], case: Path) -> None:
    raw["ganforge"]["meta"]["note"] = Marker(case / "marker")


def in_state(raw: dict[str, Any], case: Path) -> None:
    raw["state_dict"]["G.net.0.weight"] = Marker(case / "marker")


def opener(case: Path) -> dict[str, str]:
    return {"_target_": "builtins.open", "file": str(case / "marker"), "mode": "w"}


def evil_yaml(case: Path) -> None:
    (case / "evil.yaml").write_text(
        f"_target_: builtins.open\nfile: {case / 'marker'}\nmode: w\nname: evil\n"
    )


# payload -> (crafting, the commands that must refuse it; the others may ignore it)
PAYLOADS: dict[str, tuple[Setup, set[str]]] = {
    "pickled-object-in-record": (from_ring(in_meta), {"train", "eval", "sample"}),
    "pickled-object-as-weight": (from_ring(in_state), {"train", "eval", "sample"}),
    "class-builtins-open": (
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"].update({"class": "builtins.open"})
        ),
        {"train", "eval", "sample"},
    ),
    "init-args-target": (
        from_ring(
            lambda raw, case: raw["ganforge"]["generator"]["init_args"].update(hidden=opener(case))
        ),
        {"train", "eval", "sample"},
    ),
    "data-args-target": (
        from_ring(
            lambda raw, case: raw["ganforge"]["meta"]["data_args"].update(
                _target_="builtins.open", seed=opener(case)
            )
        ),
        {"eval"},
    ),
    "data-args-nested-target": (
        from_ring(lambda raw, case: raw["ganforge"]["meta"]["data_args"].update(std=opener(case))),
        {"eval"},
    ),
    "data-absolute-yaml": (
        both(
            lambda case, ckpts: evil_yaml(case),
            from_ring(lambda raw, case: raw["ganforge"]["meta"].update(data=str(case / "evil"))),
        ),
        {"eval"},
    ),
    "data-cifar-root": (
        both(
            lambda case, ckpts: evil_cifar(case / "evil", case / "marker"),
            from_ring(
                lambda raw, case: raw["ganforge"]["meta"].update(
                    data="cifar10", data_args={"root": str(case / "evil"), "download": False}
                ),
                base="cifar",
            ),
        ),
        {"eval"},
    ),
}
COMMANDS = {
    # train: the ring run's own settings, so only the payload differs; max_iters at the
    # checkpoint's iteration, so a resume that gets through trains nothing.
    "train": ("ganforge-train", [*RING, f"ckpt_path={X}", "hydra.run.dir={case}/run"], ("run",)),
    "eval": ("ganforge-eval", [f"ckpt={X}", "out={case}/r.json"], ()),
    "sample": ("ganforge-sample", [f"ckpt={X}", "out={case}/grid.png"], ("grid.png",)),
}
SECURITY = [
    Case(
        f"code-{payload}-{command}{'-forced' if forced else ''}",
        COMMANDS[command][0],
        COMMANDS[command][1],
        [],
        setup,
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if forced else {},
        codes=(2,) if command in refusers else (0, 2),
        own=COMMANDS[command][2],
    )
    for payload, (setup, refusers) in PAYLOADS.items()
    for command in COMMANDS
    for forced in (False, True)
]
CASES += [
    evaluate(
        "data-root-of-malicious-pickles",
        ["ckpt={cifar}", "data=cifar10", "data.root={case}/evil", "data.download=false"],
        ["data_batch_1", "never holds"],
        lambda case, ckpts: evil_cifar(case / "evil", case / "marker"),
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
]
ALL = CASES + SECURITY


# --- running them ---------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes (and every folder)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[rel] = "<dir>"
    return found


def fill(text: str, case: Path, ckpts: dict[str, Path]) -> str:
    return text.format(case=case, **ckpts)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Real checkpoints: a tiny MLP on the toy ring (20 iterations) and a tiny DCGAN on MNIST-5k
    (debug=smoke), trained once for the module."""
    ring = tmp_path_factory.mktemp("ring")
    train(compose_train(ring, *RING))
    dcgan = tmp_path_factory.mktemp("dcgan")
    train(compose_train(dcgan, "debug=smoke", "model.base_width=8", "logger=none"))
    found = {"ring": ring, "dcgan": dcgan, "cifar": tmp_path_factory.mktemp("cifar")}
    found = {name: run / "checkpoints" / "last.ckpt" for name, run in found.items()}
    cifar_shaped(found["dcgan"], found["cifar"])
    return found


def cifar_shaped(dcgan_ckpt: Path, out: Path) -> None:
    """The DCGAN checkpoint with networks for CIFAR-10's 3x32x32 images and its record naming
    cifar10 (untrained: ganforge-eval only reads the record and the weights)."""
    from ganforge.checkpoint import D_PREFIX, G_EMA_PREFIX, G_PREFIX, describe_network
    from ganforge.models import dcgan

    raw = torch.load(dcgan_ckpt, weights_only=True)
    shape = dict(channels=3, image_size=32, base_width=8, n_classes=10)
    G, D = dcgan.Generator(**shape), dcgan.Discriminator(**shape)
    raw["ganforge"].update(generator=describe_network(G), discriminator=describe_network(D))
    raw["ganforge"]["meta"].update(data="cifar10", data_args={"download": False})
    raw["state_dict"] = {
        **{G_PREFIX + k: v for k, v in G.state_dict().items()},
        **{G_EMA_PREFIX + k: v for k, v in G.state_dict().items()},
        **{D_PREFIX + k: v for k, v in D.state_dict().items()},
    }
    out.parent.mkdir(parents=True)
    torch.save(raw, out)


@pytest.fixture(scope="module")
def outcome(ckpts: dict[str, Path], tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Every case run once through the driver; its result, and its folder before and after."""
    root = tmp_path_factory.mktemp("cases")
    runs = {name: path.parent.parent for name, path in ckpts.items()}
    runs_before = {name: snapshot(run) for name, run in runs.items()}
    specs, befores = [], {}
    for case in ALL:
        case_dir = root / case.id
        case_dir.mkdir()
        if case.setup is not None:
            case.setup(case_dir, ckpts)
        befores[case.id] = snapshot(case_dir)
        env = {
            "GANFORGE_LOG_DIR": str(case_dir / "logs"),
            "GANFORGE_DATA_DIR": str(case_dir / "data"),
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None,
            **case.env,
        }
        argv = [fill(a, case_dir, ckpts) for a in case.args]
        specs.append(
            {"id": case.id, "command": case.command, "argv": argv, "env": env, "cwd": str(case_dir)}
        )
    (root / "cases.json").write_text(json.dumps(specs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(TESTS / "commands_driver.py"), str(root / "cases.json")]
    cmd.append(str(root / "results.json"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=root)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((root / "results.json").read_text())
    return {
        "runs": (runs_before, {name: snapshot(run) for name, run in runs.items()}),
        **{
            case.id: {
                **results[case.id],
                "dir": root / case.id,
                "before": befores[case.id],
                "after": snapshot(root / case.id),
            }
            for case in ALL
        },
    }


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 50 and len(SECURITY) == len(PAYLOADS) * 3 * 2
    assert len({case.id for case in ALL}) == len(ALL)


HYDRA_OWN = ("run", f"run{os.sep}.hydra", f"run{os.sep}train.log")  # Hydra's record of any attempt


@pytest.mark.slow
@pytest.mark.parametrize("case", ALL, ids=[case.id for case in ALL])
def test_bad_input_is_one_clear_error_and_writes_nothing(
    outcome: dict, ckpts: dict[str, Path], case: Case
) -> None:
    result = outcome[case.id]
    output, case_dir = result["output"], result["dir"]
    assert "Traceback" not in output, output[-3000:]
    assert result["code"] in case.codes, output[-3000:]
    assert not (case_dir / "marker").exists(), "a checkpoint ran code"
    before, after = result["before"], result["after"]
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    owned = {p for p in changed if p.split(os.sep)[0] in case.own}
    assert changed == owned, f"changed on disk: {sorted(changed - owned)}"
    if result["code"] == 2:
        errors = [line for line in output.splitlines() if ERROR_LINE.search(line)]
        assert len(errors) == 1, output[-3000:]
        for text in case.expect:
            assert fill(text, case_dir, ckpts) in errors[0], errors[0]
        # A refused command writes nothing of what it was asked for.
        assert all(p.startswith(HYDRA_OWN) for p in owned), sorted(owned)


def test_the_real_checkpoints_are_left_alone(outcome: dict) -> None:
    before, after = outcome["runs"]
    assert before == after


@pytest.mark.slow
def test_driver_agrees_with_separate_processes(
    outcome: dict, ckpts: dict[str, Path], tmp_path: Path
) -> None:
    """The in-one-process driver reports what real console processes do."""
    chosen = ["sample-n-text", "eval-n-samples-text", "code-pickled-object-in-record-eval-forced"]
    for case in [c for c in ALL if c.id in chosen]:
        case_dir = tmp_path / case.id
        case_dir.mkdir()
        if case.setup is not None:
            case.setup(case_dir, ckpts)
        env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
        env.update(GANFORGE_DATA_DIR=str(case_dir / "data"), **case.env)
        argv = [fill(a, case_dir, ckpts) for a in case.args]
        proc = subprocess.run(
            [str(BIN / case.command), *argv],
            env=env,
            cwd=case_dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == outcome[case.id]["code"] == 2, output[-3000:]
        assert "Traceback" not in output and not (case_dir / "marker").exists()

        def message(text: str, folder: Path) -> str:
            line = next(line for line in text.splitlines() if ERROR_LINE.search(line))
            return line[ERROR_LINE.search(line).start() :].replace(str(folder), "{case}")

        assert message(output, case_dir) == message(
            outcome[case.id]["output"], outcome[case.id]["dir"]
        )


@pytest.mark.slow
def test_a_sample_sweep_reports_each_bad_job_and_goes_on(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    args = [f"ckpt={ckpts['ring']}", "n=abc,4", f"out={tmp_path}/grid.png"]
    proc = subprocess.run(
        [str(BIN / "ganforge-sample"), "-m", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert "ConfigError: n='abc' must be a positive integer" in output
    assert "1 job(s) stopped on a user error" in output
    assert (tmp_path / "grid.png").is_file()  # the good job ran after the bad one
