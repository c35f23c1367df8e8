"""`system.compile` with the parts that change how G and D are called: an ACGAN's D.judge,
WGAN-GP's gradient penalty (D eager inside a compiled run: double backward), bf16-mixed autocast,
DDP on two CPU processes (gloo), nan_policy=skip. Each trains compiled for a few iterations and
is held to the eager run from the same seed: the same state-dict keys, the same game to a stated
tolerance.

Run as a script (`python tests/test_compile_parts.py OUT override...`) it is the DDP test's
helper: ddp_dump's training, plus each rank's compile counts in OUT/compile{rank}.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_train, quiet_trainer, toy_system
from ganforge.models import mlp
from ganforge.train import train
from test_compile import LOSS_ATOL, WEIGHT_RTOL
from test_ddp import COMMON, run_dump
from test_fault_tolerance import nan_d_loss_at


def test_an_acgan_discriminator_is_compiled_where_the_step_calls_it() -> None:
    # The training step asks an ACGAN's D for logits and class logits through D.judge, not
    # D's __call__: compiling the call alone left D eager in every update.
    acgan = dict(hidden=32, depth=2, dim=2, conditional="acgan", n_classes=3)
    system, _ = toy_system(
        generator=mlp.Generator(z_dim=8, **acgan),
        discriminator=mlp.Discriminator(**acgan),
        compile=True,
    )
    system.configure_model()
    x, y = torch.randn(16, 2), torch.randint(3, (16,))
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    logits, class_logits = system.discriminate(x, y)
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames
    with torch.compiler.set_stance("force_eager"):
        eager_logits, eager_class_logits = system.discriminate(x, y)
    torch.testing.assert_close(logits, eager_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(class_logits, eager_class_logits, rtol=0, atol=1e-6)
    assert "judge" not in "".join(system.state_dict())


@pytest.mark.slow  # G's and D's compiles: 4-22 s on 2 loaded cores
def test_nan_policy_skip_skips_a_compiled_update() -> None:
    # A skipped update returns from the step between D's compiled forward and its backward.
    system, dm = toy_system(max_iters=6, nan_policy="skip", compile=True)
    nan_d_loss_at(system, 3)
    quiet_trainer().fit(system, datamodule=dm)
    assert system.iteration == 6 and system.nan_guard.skipped == 1
    assert system.D._compiled_call_impl is not None  # nn.Module.compile's wrapper
    assert all(torch.isfinite(p).all() for p in system.parameters())


# A tiny MLP on the ring, 10 iterations, with the health probe, periodic evaluations and the
# checkpoint callback of the default callbacks.
SMALL = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "data.n_samples=256",
    "data.batch_size=32",
    "train.max_iters=10",
    "logger=none",
    "num_threads=1",
]
# The tolerances of test_compile's 100-iteration game hold with margin: measured here after 10
# iterations, weights within 5e-8 of each tensor's largest entry in fp32 and bit-identical under
# bf16-mixed (both runs' bf16 matmuls are the same oneDNN calls). Iterations 1 to 10 move them by
# 3e-3 to 2e-2 of that scale: a compiled run that did not train, or played another game, fails.


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "term"),
    [
        (["model.conditional=acgan"], "train/d_aux"),  # D.judge's class logits
        (["loss=wgan_gp", "system.n_critic=2"], "train/gp"),  # D eager in the double backward
        (["trainer.precision=bf16-mixed"], "train/d_adv"),
    ],
    ids=["acgan", "wgan_gp", "bf16_mixed"],
)
def test_a_compiled_run_matches_the_eager_run(
    tmp_path: Path, overrides: list[str], term: str
) -> None:
    torch._dynamo.reset()  # graphs another test compiled for the same classes would be reused
    runs = {}
    for flag in ("true", "false"):
        out = tmp_path / f"compile_{flag}"
        m = train(compose_train(out, *SMALL, *overrides, f"system.compile={flag}"))
        ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
        runs[flag] = m, ckpt["state_dict"]
    (compiled, a), (eager, b) = runs["true"], runs["false"]
    assert compiled["compile/frames"] >= 2  # G and D, at least
    assert "compile/frames" not in eager
    assert a.keys() == b.keys()  # no `_orig_mod.`, no compiled judge
    for key, value in b.items():
        scale = value.abs().max().clamp(min=1e-12)
        assert ((value - a[key]).abs().max() / scale) <= WEIGHT_RTOL, key
    for key in ("train/d_loss", "train/g_loss", term):
        assert compiled[key] == pytest.approx(eager[key], abs=LOSS_ATOL), key


@pytest.mark.slow
def test_ddp_two_cpu_ranks_train_compiled(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    out.mkdir()
    ddp = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, __file__, str(out), *COMMON, *ddp, "system.compile=true"],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = [json.loads(p.read_text()) for p in sorted(out.glob("compile*.json"))]
    assert len(counts) == 2 and all(c["compile/frames"] >= 2 for c in counts), counts
    r0, r1 = (torch.load(p, weights_only=True) for p in sorted(out.glob("rank*.pt")))
    # DDP's gradient hooks fire through the compiled graphs: the ranks stay bit-identical...
    assert r0["iteration"] == r1["iteration"] == 20
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # ...and play, with eager's keys, the game of one eager process on the global batch.
    (single,) = run_dump(tmp_path / "single", "trainer=cpu", "data.batch_size=16")
    assert r0["state"].keys() == single["state"].keys()
    for key, value in single["state"].items():
        scale = value.abs().max().clamp(min=1e-12)
        assert ((value - r0["state"][key]).abs().max() / scale) <= WEIGHT_RTOL, key


def main() -> None:
    import ddp_dump

    out = sys.argv[1]
    metrics = {}

    def record(cfg):
        metrics.update(train(cfg))

    ddp_dump.train = record  # ddp_dump's composition and dump, with the metrics kept
    ddp_dump.main()
    rank = os.environ.get("LOCAL_RANK", "0")
    counts = {k: v for k, v in metrics.items() if k.startswith("compile/")}
    Path(out, f"compile{rank}.json").write_text(json.dumps(counts))


if __name__ == "__main__":
    main()
