"""Compiled training (`system.compile`): torch.compile on G and D, in place.

`nn.Module.compile` wraps a module's call and leaves the module itself (its parameters, buffers and
state-dict keys) as it was, so a compiled run's checkpoint is an eager run's checkpoint: no
`_orig_mod.` prefix, and it resumes, samples and evaluates with or without compile.

What is compiled, and what stays eager (the run's first log line names each):
- G's and D's forwards (and so their backwards): every training update; an ACGAN's D.judge too.
- D stays eager where a penalty differentiates it (create_graph=True; AOTAutograd's compiled
  graphs have no double backward): the gradient penalty's own forward on interpolates, and, in
  the D updates where R1 or R2 is due, D's loss forward they are read off
  (regularizers.judge_with_penalties).
- A network with parametrized weights (spectral norm) stays eager (see PARAMETRIZED).
- The EMA generator stays eager: it only samples, every few hundred iterations.

Guards, not recompiles: G runs with and without grad, D sees real data and then fakes that require
grad, the health probe and the evaluation run under no_grad, in eval mode, at other batch sizes.
Each is one more graph, compiled once; a batch size seen twice becomes a dynamic dimension
(`system.compile_dynamic=null`, torch's automatic dynamic shapes). `CompileReport` counts them
and the run logs the totals once, at the end of fit, with dynamo's reason for each recompile.
Whether compiling pays, and where the time goes when it does not: README, Benchmarks (g).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ganforge.errors import ConfigError
from ganforge.regularizers import PENALTIES

log = logging.getLogger(__name__)

MODES = ("default", "reduce-overhead", "max-autotune")
FIX = "or system.compile=false to train eagerly"


def check_mode(value: Any) -> str | None:
    """`system.compile` as a torch.compile mode, None when off (false/null)."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in MODES:
        return value
    raise ConfigError(
        f"system.compile={value!r} must be true, false or a torch.compile mode {list(MODES)}, "
        "e.g. system.compile=true"
    )


def check_dynamic(value: Any) -> bool | None:
    """`system.compile_dynamic`: null (torch's automatic dynamic shapes), true or false."""
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(
        f"system.compile_dynamic={value!r} must be true, false or null (null: a dimension "
        "becomes dynamic once it has been seen at two sizes)"
    )


def check_backend(mode: str | None) -> None:
    """Can inductor compile on this machine? Checked before any training work: what it lacks is
    one ConfigError naming the fix, never a traceback from the first iteration."""
    if mode is None:
        return
    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError(
            f"system.compile={mode}: torch {torch.__version__} cannot compile on this Python "
            f"(torch._dynamo is not supported here); upgrade torch, {FIX}"
        )
    _smoke_compile(_cxx_search())


def _cxx_search() -> tuple[str | None, ...]:
    cxx = torch._inductor.config.cpp.cxx
    return tuple(cxx) if isinstance(cxx, (list, tuple)) else (cxx,)


@functools.cache
def _smoke_compile(search: tuple[str | None, ...]) -> None:
    # Inductor on a CPU writes C++ and builds it as a Python extension: it needs a C++ compiler
    # (g++ by default, $CXX) and Python's headers. Named checks first, for the clearest message;
    # then one tiny compile (seconds, once per process) catches whatever else would break.
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.cpp_compiler_search(search)
    except exc.InvalidCxxCompiler:
        raise ConfigError(
            f"system.compile needs a C++ compiler for inductor on a CPU, and none of "
            f"{[cxx for cxx in search if cxx]} runs here; install one (e.g. apt-get install g++) "
            f"or point $CXX at it, {FIX}"
        ) from None
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        raise ConfigError(
            f"system.compile needs Python's C headers ({include}/Python.h is missing); install "
            f"them (e.g. apt-get install python3-dev), {FIX}"
        )
    try:
        torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(3))
    except Exception as err:  # any failure here would be the first iteration's
        raise ConfigError(
            f"system.compile: a test compile failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); {FIX}"
        ) from None


def compile_system(system: Any) -> None:
    """Compile a GANSystem's G and D in place as its settings ask (`system.compile`), and start
    counting what gets compiled. Called from its `configure_model`, at the start of every fit."""
    s = system.settings
    mode = check_mode(s.compile)
    if mode is None:
        return
    eager = [] if system.G_ema is None else ["the EMA generator (it only samples)"]
    compiled = []
    for name, net in (("G", system.G), ("D", system.D)):
        if _parametrized(net):
            eager.append(f"{name} ({PARAMETRIZED})")
            continue
        net.compile(mode=mode, dynamic=s.compile_dynamic)
        compiled.append(name)
    if "D" in compiled and system.conditional == "acgan":
        # GANSystem.discriminate calls an ACGAN's D.judge (logits and class logits), not D's
        # __call__: judge is compiled too, as an instance attribute (outside the state dict), once.
        if "judge" not in vars(system.D):
            system.D.judge = torch.compile(system.D.judge, mode=mode, dynamic=s.compile_dynamic)
        compiled.append("D.judge")
    if "D" in compiled:
        eager += _eager_for_penalties(s)
    what = ", ".join(compiled) or "nothing"
    log.info("torch.compile (mode=%s): %s; eager: %s", mode, what, "; ".join(eager) or "nothing")
    system.compile_report.start()


def _eager_for_penalties(settings: Any) -> list[str]:
    """Where the penalties switched on run D eagerly: they backpropagate through an input
    gradient (create_graph=True), and AOTAutograd's compiled graphs have no double backward."""
    on = [p for p in PENALTIES if getattr(settings, p.weight)]
    own = [p.name for p in on if p.of_outputs is None]
    shared = [p.name for p in on if p.of_outputs is not None]
    eager = []
    if own:
        eager.append(f"D where {' and '.join(own)} runs it (double backward)")
    if shared:
        eager.append(
            f"D in the D updates where {' or '.join(shared)} is due (read off D's loss forward: "
            "double backward)"
        )
    return eager


# Spectral norm's power iteration updates its u, v buffers in place at every training call; a
# compiled graph saves them for the backward, so D(fake) after D(real) would invalidate D(real)'s
# backward (eager clones them). Such a network stays eager.
PARAMETRIZED = "parametrized weights, e.g. spectral norm: its in-place power iteration breaks "
PARAMETRIZED += "a compiled backward when the network is called twice before it"


def _parametrized(net: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in net.modules())


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly inside: for the penalties' double backward."""
    with torch.compiler.set_stance("force_eager"):
        yield


@dataclass
class CompileStats:
    """What dynamo compiled since a starting point: frames (first compiles and recompiles), the
    recompiles among them with dynamo's reasons, and the seconds spent compiling (forward and
    the lazily compiled backward graphs)."""

    frames: int = 0
    recompiles: int = 0
    reasons: tuple[str, ...] = ()
    seconds: float = 0.0


class CompileReport:
    """Counts what a run compiles between `start` and `finish`, and logs it once."""

    def __init__(self) -> None:
        self._frames = 0
        self._seconds = 0.0
        self._before: list[Any] | None = None  # dynamo's compilation records before start
        self.stats: CompileStats | None = None

    def start(self) -> None:
        self._frames, self._seconds = _frames(), _seconds()
        self._before = torch._dynamo.utils.get_compilation_metrics()

    def finish(self, iterations: int, metrics: dict[str, float]) -> None:
        """Log the totals, and add them to `metrics` (compile/frames, compile/recompiles,
        compile/seconds): train() returns them."""
        if self._before is None:
            return
        # Dynamo keeps its last 64 records: enough to name the reasons; the frame count is exact.
        # (The old records are held in _before, so their ids cannot be reused meanwhile.)
        seen = {id(m) for m in self._before}
        new = [m for m in torch._dynamo.utils.get_compilation_metrics() if id(m) not in seen]
        reasons = [m.recompile_reason for m in new if m.recompile_reason]
        self.stats = CompileStats(
            _frames() - self._frames, len(reasons), tuple(dict.fromkeys(reasons)),
            _seconds() - self._seconds,
        )  # fmt: skip
        self._before = None
        metrics["compile/frames"] = float(self.stats.frames)
        metrics["compile/recompiles"] = float(self.stats.recompiles)
        metrics["compile/seconds"] = self.stats.seconds
        log.info(
            "torch.compile: %d frames compiled in %.1f s over %d iterations, %d of them "
            "recompiles%s",
            self.stats.frames,
            self.stats.seconds,
            iterations,
            self.stats.recompiles,
            "".join(f"\n  recompiled: {r}" for r in self.stats.reasons),
        )


def _frames() -> int:
    return torch._dynamo.utils.counters["frames"]["ok"]


# Dynamo's own timers: a frame's trace and its forward compile, and the lazily compiled backward.
_TIMED = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")


def _seconds() -> float:
    times = torch._dynamo.utils.compilation_time_metrics
    return sum(sum(times.get(key, ())) for key in _TIMED)
