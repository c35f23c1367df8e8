"""`system.compile`: bad values fail before any work; a compiled run plays the eager run's game
(to a stated tolerance), stops compiling once every kind of call has been seen, and writes a
checkpoint that resumes eagerly, exactly, and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch

from conftest import compose_train, toy_system
from ganforge.errors import ConfigError
from ganforge.train import train
from test_eval_sample import sample_cfg


@pytest.mark.parametrize("value", ["fast", "reduce_overhead", 1, "true"])
def test_an_unknown_mode_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"system.compile=.* must be true, false or a"):
        toy_system(compile=value)


def test_an_unknown_dynamic_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"system.compile_dynamic='yes' must be true, false"):
        toy_system(compile_dynamic="yes")


def test_no_cxx_compiler_is_one_error_before_any_work(tmp_path: Path) -> None:
    # Inductor on a CPU builds C++: without a compiler the run must stop before it writes or
    # trains anything, with the fix, not with a traceback from the first iteration.
    cfg = compose_train(tmp_path / "run", "data=toy_ring", "model=mlp", "system.compile=true")
    missing = torch._inductor.config.patch({"cpp.cxx": ("ganforge-no-such-cxx",)})
    with missing, pytest.raises(ConfigError, match=r"C\+\+ compiler .* system.compile=false"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    toy_system(compile=False)  # eager needs no compiler


def test_a_spectrally_normalised_network_stays_eager(caplog) -> None:
    from ganforge.models import mlp

    system, _ = toy_system(
        discriminator=mlp.Discriminator(hidden=32, depth=2, dim=2, spectral_norm=True),
        compile=True,
    )
    with caplog.at_level("INFO", logger="ganforge.compile"):
        system.configure_model()
    # nn.Module.compile wraps the call in place; None: the network runs eagerly.
    assert system.G._compiled_call_impl is not None
    assert system.D._compiled_call_impl is None
    assert "D (parametrized weights, e.g. spectral norm" in caplog.text


class Phases(L.Callback):
    """Records dynamo's frame count and the metrics at `marks`; from iteration `eager_from`
    on, runs the compiled networks eagerly (the rest of the run is then an eager run's)."""

    frames: ClassVar[dict[int, int]] = {}
    metrics: ClassVar[dict[int, dict[str, float]]] = {}

    def __init__(self, marks: list[int], eager_from: int | None = None) -> None:
        self.marks, self.eager_from = marks, eager_from
        Phases.frames, Phases.metrics = {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration
        if it in self.marks:
            Phases.frames[it] = torch._dynamo.utils.counters["frames"]["ok"]
            Phases.metrics[it] = dict(pl_module.last_metrics)
        if it == self.eager_from:
            torch.compiler.set_stance("force_eager")


# The 8-mode ring, R1 on, with everything that calls G or D outside the two updates: the probe
# (64 samples, no grad), the periodic evaluation (eval mode, no grad, 500 samples) and sample
# grids (no EMA generator, so both call the compiled G), and a short last batch (1,000 samples at
# batch 64: 15 full batches and one of 40). Iteration 200 (the resume point) has no evaluation.
GAME = [
    "data=toy_ring",
    "model=mlp",
    "data.n_samples=1000",
    "data.batch_size=64",
    "data.drop_last=false",
    "system.ema_decay=null",
    "system.r1_gamma=0.1",  # its double backward runs D eagerly inside a compiled run
    "logger=none",
    "callbacks=eval",
    "metrics.names=[modes2d]",
    "callbacks.evaluation.every_n_iters=75",
    "callbacks.evaluation.evaluator.n_samples=500",
    "callbacks.samples.every_n_iters=100",
    "callbacks.health.every_n_iters=25",
    "callbacks.checkpoint.every_n_iters=100",
    "num_threads=1",
]
# Weights of the compiled and the eager run after 100 iterations, per tensor, relative to its
# largest entry; and the logged losses. Not bit-exact: inductor's fused kernels round (and sum)
# differently from eager ATen, ~1 ulp per op, and the game feeds the differences back into both
# players: measured here 2e-6 after 100 iterations, ~1e-2 after 300.
WEIGHT_RTOL = 1e-4
LOSS_ATOL = 1e-4


def phases(marks: list[int], eager_from: int | None = None) -> str:
    return f"+callbacks.phases={{_target_: test_compile.Phases, marks: {marks}, " + (
        f"eager_from: {eager_from if eager_from is not None else 'null'}}}"
    )


@pytest.mark.slow
def test_compiled_run_plays_the_same_game_and_resumes_eagerly_exactly(tmp_path: Path) -> None:
    compiled, eager, resumed = tmp_path / "compiled", tmp_path / "eager", tmp_path / "resumed"
    try:
        m = train(
            compose_train(
                compiled,
                *GAME,
                "system.compile=true",
                "train.max_iters=300",
                phases([100, 200], eager_from=200),
            )
        )
    finally:
        torch.compiler.set_stance("default")
    frames, compiled_metrics = dict(Phases.frames), dict(Phases.metrics)
    # No hidden recompiles: by iteration 100 every kind of call (D frozen for G's step, probes,
    # an evaluation, sample grids, short batches) has run, and nothing compiles after it.
    assert frames[200] == frames[100]
    assert m["compile/frames"] <= 12 and m["compile/recompiles"] <= 10, m

    train(compose_train(eager, *GAME, "train.max_iters=100", phases([100])))
    name = "checkpoints/iter_0000100.ckpt"
    a, b = (torch.load(d / name, weights_only=True)["state_dict"] for d in (eager, compiled))
    # Checkpoints don't know: the same keys (no `_orig_mod.`), the same game within tolerance.
    assert a.keys() == b.keys()
    for key, value in a.items():
        scale = value.abs().max().clamp(min=1e-12)
        assert ((value - b[key]).abs().max() / scale) <= WEIGHT_RTOL, key
    for key in ("train/d_loss", "train/g_loss"):
        assert Phases.metrics[100][key] == pytest.approx(compiled_metrics[100][key], abs=LOSS_ATOL)

    # The compiled run went eager at 200; resuming its iteration-200 checkpoint without compile
    # must give the very same run: weights, optimizers, RNG streams and data order restored.
    ckpt = compiled / "checkpoints" / "iter_0000200.ckpt"
    train(compose_train(resumed, *GAME, "train.max_iters=300", f"ckpt_path={ckpt}"))
    whole, again = (
        torch.load(d / "checkpoints/last.ckpt", weights_only=True) for d in (compiled, resumed)
    )
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key
    for opt_a, opt_b in zip(whole["optimizer_states"], again["optimizer_states"], strict=True):
        for i, state in opt_a["state"].items():
            for k, value in state.items():
                assert torch.equal(value, opt_b["state"][i][k]), (i, k)

    from ganforge.sample import sample

    out = sample(sample_cfg(compiled / "checkpoints/last.ckpt", tmp_path / "samples.png", n=16))
    assert out.is_file()
