"""The training-health monitor: each state provoked by a real run that has it, the rules'
hysteresis, the probe's lack of side effects, and the actions (health.json, the plot, the W&B
alert, stopping a run with exit code 2 and last.ckpt saved)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from conftest import compose_train, quiet_trainer, toy_system
from ganforge import losses
from ganforge.callbacks.health import HealthMonitor
from ganforge.errors import ConfigError
from ganforge.health import actions, signals
from ganforge.health.rules import STATES, Diagnoser, Event, Thresholds
from ganforge.losses import GANLoss
from ganforge.models import mlp
from ganforge.train import train

# The 8-mode ring with the preset's MLPs, probed every 25 iterations, diagnosed from 100 on.
RING = ["experiment=toy_ring", "callbacks=default", "logger=none", "num_threads=1"]
PROBE = [
    "callbacks.health.every_n_iters=25",
    "callbacks.health.warmup_iters=100",
    "callbacks.samples.every_n_iters=1000",
]


def run(tmp_path: Path, *overrides: str) -> list[dict[str, Any]]:
    """Train with `overrides`; return the episodes of its health.json."""
    train(compose_train(tmp_path, *RING, *PROBE, *overrides))
    return json.loads((tmp_path / "health.json").read_text())


def episodes_of(episodes: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    found = [e for e in episodes if e["state"] == state]
    assert found, f"no {state} episode in {[e['state'] for e in episodes]}"
    return found


def check_window(episode: dict[str, Any], start: tuple[int, int], patience: int = 3) -> None:
    """Raised `patience - 1` probes after the first diagnosed probe of its streak, within
    `start`; the episode starts where the evidence started (a probe: 1 or a multiple of 25, in
    the warm-up if the evidence was there already), never after that streak."""
    streak = episode["raised_at"] - (patience - 1) * 25
    assert start[0] <= streak <= start[1], episode
    assert episode["start"] <= streak and (episode["start"] == 1 or episode["start"] % 25 == 0)


# --- each state, from a real run that has it ----------------------------------------------------
def test_vanishing_g_gradient_with_minimax_and_a_strong_d(tmp_path: Path) -> None:
    # D at 50x the preset's learning rate wins within ~50 iterations; minimax's G gradient,
    # proportional to D(G(z)), then dies (1e-5 and falling).
    episodes = run(tmp_path, "loss=minimax", "optim.lr_d=1e-2", "train.max_iters=200")
    [vanishing] = episodes_of(episodes, "vanishing_g_gradient")
    check_window(vanishing, (100, 100))
    assert vanishing["end"] is None  # it never recovers
    assert vanishing["evidence"]["d_fake"] <= 0.05
    assert vanishing["evidence"]["g_grad_norm"] < 1e-3 * vanishing["evidence"]["g_grad_max"]
    assert "loss=non_saturating" in vanishing["remedies"]
    assert vanishing["readme"] == "README.md#health-vanishing-g-gradient"


def test_vanishing_g_gradient_is_not_raised_for_the_non_saturating_loss(tmp_path: Path) -> None:
    episodes = run(tmp_path, "optim.lr_d=1e-2", "train.max_iters=200")
    assert "vanishing_g_gradient" not in [e["state"] for e in episodes]


def test_d_overpowering_with_a_very_high_lr_d(tmp_path: Path) -> None:
    # On MNIST a small MLP G cannot get near the digits within a few hundred iterations, and D at
    # lr 1e-2 tells every real and fake apart (on the ring G sits on real modes, so it cannot).
    overrides = ["data=mnist5k", "model=mlp", "model.hidden=32", "model.depth=1"]
    overrides += ["data.batch_size=32", "optim.lr_d=1e-2", "train.max_iters=200"]
    [over] = episodes_of(run(tmp_path, *overrides), "d_overpowering")
    check_window(over, (100, 125))
    assert min(over["evidence"]["d_acc_real"], over["evidence"]["d_acc_fake"]) >= 0.95
    assert over["evidence"]["d_gap"] >= 0.9  # D(x) - D(G(z)), probabilities
    assert "g_grad_norm" in over["evidence"]


class PointGenerator(mlp.Generator):
    """A generator whose output cannot vary: its latent is multiplied by 0, so it learns one
    point (through its biases) and draws it for every z."""

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return super().forward(z * 0.0, y)


def test_mode_collapse_of_a_generator_that_cannot_vary(tmp_path: Path) -> None:
    target = f"model.generator._target_={__name__}.PointGenerator"
    episodes = run(tmp_path, target, "train.max_iters=200")
    [collapse] = episodes_of(episodes, "mode_collapse")
    check_window(collapse, (100, 100))
    assert collapse["end"] is None
    ev = collapse["evidence"]
    assert ev["diversity"] < 1e-3 and ev["real_distance"] > 1.0  # ring radius 2
    assert ev["diversity"] == pytest.approx(ev["fake_distance"] / ev["real_distance"])


def test_divergence_with_an_absurd_learning_rate(tmp_path: Path) -> None:
    episodes = run(tmp_path, "optim.lr_d=1", "optim.lr_g=1", "train.max_iters=150")
    [div] = episodes_of(episodes, "divergence")[:1]
    check_window(div, (100, 100))
    ev = div["evidence"]
    factors = {k: v for k, v in ev.items() if k.endswith("_factor")}
    assert factors and all(v >= 1000 for v in factors.values()), ev
    key = next(iter(factors)).removesuffix("_factor")
    assert abs(ev[key]) == pytest.approx(factors[f"{key}_factor"] * ev[f"{key}_reference"])


def test_stalled_with_a_frozen_generator_and_periodic_evaluation(tmp_path: Path) -> None:
    # lr_g=0: G never moves, so its update ratio is 0 and the 2-D mode count never improves.
    evaluation = ["callbacks=eval", "callbacks.evaluation.every_n_iters=25"]
    evaluation += ["callbacks.evaluation.evaluator.n_samples=500"]
    train(compose_train(tmp_path, *RING, *evaluation, *PROBE, "optim.lr_g=0",
                        "train.max_iters=150"))  # fmt: skip
    episodes = json.loads((tmp_path / "health.json").read_text())
    [stall] = episodes_of(episodes, "stalled")
    check_window(stall, (100, 100))
    ev = stall["evidence"]
    assert ev["g_update_ratio"] == 0.0
    # Evaluations at 25, 50, 75 (seen by the probe at 100): the best was at 25, none since.
    assert ev["evals_without_improvement"] >= 2
    assert ev["modes_captured"] <= ev["best_modes_captured"]


def test_stop_ends_the_run_with_exit_code_2_and_last_ckpt_saved(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ganforge.train", f"hydra.run.dir={tmp_path}", *RING, *PROBE]
    cmd += ["optim.lr_g=0", "train.max_iters=1000", "callbacks.health.on_stalled=stop"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    # G has not moved since the first probe: the episode starts there, not at the warm-up's end.
    assert "HealthStop: callbacks.health.on_stalled=stop: stalled from iteration 1 " in out
    assert "Traceback" not in out
    # Raised at the probe of iteration 150 (100, 125, 150), stopped after that iteration.
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["ganforge"]["iteration"] == 150
    [stall] = episodes_of(json.loads((tmp_path / "health.json").read_text()), "stalled")
    assert stall["action"] == "stop" and stall["raised_at"] == 150 and stall["end"] is None
    assert stall["start"] == 1 and stall["follows"] is None
    assert (tmp_path / "plots" / "health.png").is_file()
    assert (tmp_path / "plots" / "losses.png").is_file()  # the other plots were drawn too


# --- a healthy run ------------------------------------------------------------------------------
def test_healthy_ring_logs_signals_and_raises_nothing(tmp_path: Path) -> None:
    overrides = ["logger=csv", "train.max_iters=400"]
    train(compose_train(tmp_path, *RING, *PROBE, *overrides))
    assert json.loads((tmp_path / "health.json").read_text()) == []
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    probed = [r for r in rows if r.get("health/diversity")]
    # Iteration 1 (the references) and every 25th.
    assert [int(r["step"]) for r in probed] == [1, *range(25, 401, 25)]
    for key in ("d_acc_real", "d_acc_fake", "d_gap", "g_grad_norm", "d_grad_norm",
                "g_update_ratio", "d_update_ratio"):  # fmt: skip
        assert all(float(r[f"health/{key}"]) >= 0 for r in probed[1:]), key
    assert (tmp_path / "plots" / "health.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_false_alarm_on_the_ring_preset(tmp_path: Path, seed: int) -> None:
    """experiment=toy_ring at its full length and the default health settings."""
    train(compose_train(tmp_path, "experiment=toy_ring", "logger=none", f"seed={seed}"))
    assert json.loads((tmp_path / "health.json").read_text()) == []


# --- the probe leaves training alone --------------------------------------------------------------
def test_probing_every_iteration_does_not_change_the_run(tmp_path: Path) -> None:
    """Same weights after 12 iterations with and without the monitor probing each iteration: it
    restores BatchNorm statistics and forks the RNGs (dropout in D)."""
    torch.manual_seed(0)
    results = []
    for monitor in (False, True):
        torch.manual_seed(0)
        system, dm = toy_system(
            max_iters=12,
            ema_decay=None,  # G gets a BatchNorm below, which a copy made now would lack
            generator=mlp.Generator(z_dim=8, hidden=32, depth=2, dim=2),
            discriminator=mlp.Discriminator(hidden=32, depth=2, dim=2, dropout=0.3),
        )
        system.G.net.insert(1, torch.nn.BatchNorm1d(32))  # running statistics to disturb
        health = HealthMonitor(str(tmp_path), every_n_iters=1, warmup_iters=0)
        quiet_trainer(callbacks=[health] if monitor else []).fit(system, datamodule=dm)
        results.append({k: v.clone() for k, v in system.state_dict().items()})
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.conditional=projection"],
        ["model.conditional=acgan"],
        ["model.pack=2", "data.batch_size=32"],
        ["loss=wgan_gp"],
        ["loss=lsgan", "model.spectral_norm=true"],
        ["loss=relativistic", "system.n_critic=2"],
    ],
    ids=lambda o: ",".join(o),
)
def test_probe_works_for_every_kind_of_model(tmp_path: Path, overrides: list[str]) -> None:
    tiny = ["data=toy_ring", "model=mlp", "model.hidden=16", "callbacks=default", "logger=none"]
    probe_often = ["callbacks.health.every_n_iters=2", "callbacks.health.warmup_iters=0"]
    cfg = compose_train(tmp_path, *tiny, *overrides, *probe_often, "train.max_iters=4")
    metrics = train(cfg)
    health = {k.removeprefix("health/"): v for k, v in metrics.items() if k.startswith("health/")}
    # D's accuracies are shares of the probe's (at most 64) real and fake samples.
    for key in ("d_acc_real", "d_acc_fake"):
        assert 0 <= health[key] <= 1 and (64 * health[key]).is_integer(), (key, health[key])
    # Both networks got a gradient and took a step, smaller than their weights.
    for net in ("g", "d"):
        assert 0 < health[f"{net}_grad_norm"] < math.inf, net
        assert 0 < health[f"{net}_update_ratio"] < 1, net
    # An untrained G's samples are spread, not collapsed; diversity is their spread over real's.
    assert health["real_distance"] > 0 and health["fake_distance"] > 0
    assert health["diversity"] == pytest.approx(health["fake_distance"] / health["real_distance"])
    # D's mean outputs are probabilities for a probabilistic loss (scores for a critic).
    loss = instantiate(cfg.loss)
    if loss.probabilistic:
        assert 0 <= health["d_fake"] <= 1 and -1 <= health["d_gap"] <= 1
    assert all(math.isfinite(health[k]) for k in ("d_fake", "d_gap", "d_loss", "g_loss"))


class Constant(torch.nn.Module):
    """A collapsed G: the point (-1, -1) whatever z."""

    z_dim = 8

    def forward(self, z: Tensor) -> Tensor:
        return torch.full((z.shape[0], 2), -1.0)


class Diagonal(torch.nn.Module):
    """A D that calls a point real when x + y > 1, sharply (logit 20 (x + y - 1))."""

    def forward(self, x: Tensor) -> Tensor:
        return 20 * (x.sum(dim=1, keepdim=True) - 1)


def test_probe_signals_of_a_hand_built_case() -> None:
    system, _ = toy_system()
    system.G, system.D = Constant(), Diagonal()
    # Real corners of a 3 x 4 rectangle: pairwise distances 3, 4, 5, 5, 4, 3 (mean 4); D calls
    # the one at the origin fake (logit -20), the others real (logits 40, 60, 120).
    real = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    s = HealthMonitor("unused", probe_size=4)._probe(system, {"x": real})
    assert s["d_acc_real"] == 0.75 and s["d_acc_fake"] == 1.0  # fakes: logit -60
    assert s["real_distance"] == pytest.approx(4.0) and s["fake_distance"] == 0.0
    assert s["diversity"] == 0.0  # collapsed to one point
    assert s["d_fake"] == pytest.approx(0.0, abs=1e-12)  # sigmoid(-60)
    assert s["d_gap"] == pytest.approx(0.75)  # mean D(x) = (0 + 1 + 1 + 1) / 4


def test_probe_on_dcgan_images(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=mnist5k", "model=dcgan", "model.base_width=4",
                        "data.batch_size=8", "callbacks=default", "logger=none",
                        "train.max_iters=2", "callbacks.health.every_n_iters=1")  # fmt: skip
    metrics = train(cfg)
    # Real images against the fakes of an untrained G, both in [-1, 1]: a finite ratio.
    assert 0 < metrics["health/diversity"] < 10
    assert metrics["health/real_distance"] > 1


# --- the rules -----------------------------------------------------------------------------------
def probe(**values: float) -> dict[str, float]:
    healthy = dict(d_acc_real=0.7, d_acc_fake=0.7, d_gap=0.3, d_fake=0.4, diversity=0.9)
    healthy |= dict(fake_distance=0.9, real_distance=1.0, g_grad_norm=1.0, d_grad_norm=1.0)
    healthy |= dict(d_loss=1.3, g_loss=0.8, g_update_ratio=1e-3)
    return healthy | values


def feed(diag: Diagnoser, values: list[dict[str, float]], start: int = 0) -> list[Event]:
    events = []
    for i, s in enumerate(values):
        diag.observe(s)
        events += diag.check(start + 10 * i, s)
    return events


def test_a_state_is_raised_once_and_cleared_once_with_hysteresis() -> None:
    diag = Diagnoser(Thresholds(), patience=3, loss=GANLoss("non_saturating"))
    feed(diag, [probe()])
    # Right on every sample but not sure of it (the default DCGAN early on): not raised.
    assert feed(diag, [probe(d_acc_real=1.0, d_acc_fake=1.0, d_gap=0.6)] * 5, start=10) == []
    # Accuracy 0.96 for 5 probes: raised at the third, once.
    events = feed(diag, [probe(d_acc_real=0.96, d_acc_fake=0.99, d_gap=0.95)] * 5, start=100)
    assert [(e.state, e.since, e.iteration, e.cleared) for e in events] == [
        ("d_overpowering", 100, 120, False)
    ]
    assert events[0].evidence["d_acc_real"] == 0.96
    # Hovering just under the threshold, above the relaxed one (0.95 * 0.9): still active.
    assert feed(diag, [probe(d_acc_real=0.9, d_acc_fake=0.99, d_gap=0.85)] * 5, start=200) == []
    assert diag.active() == ["d_overpowering"]
    # One healthy probe between bad ones is not a clear.
    bad = probe(d_acc_real=0.99, d_acc_fake=0.99, d_gap=0.99)
    assert feed(diag, [probe(), bad] * 3, start=300) == []
    events = feed(diag, [probe()] * 3, start=400)
    assert [(e.state, e.since, e.iteration, e.cleared) for e in events] == [
        ("d_overpowering", 400, 420, True)
    ]
    assert diag.active() == []


def test_the_cause_is_named_and_the_rest_follow_from_it() -> None:
    """G frozen (lr_g=0): its update ratio is 0 from the first probe, D wins and the sample stays
    collapsed. Raised together, stalled is the cause; the others follow from it, say so, and
    carry no remedies of their own. An episode starts where its evidence started, in the
    warm-up (`diagnose=False`), not where diagnosis began."""
    diag = Diagnoser(Thresholds(), patience=3, loss=GANLoss("non_saturating"))
    frozen = probe(g_update_ratio=0.0)
    won = frozen | dict(d_acc_real=1.0, d_acc_fake=1.0, d_gap=0.99, diversity=0.05)
    for it, s in ((1, frozen), (50, won), (100, won), (150, won)):  # the warm-up
        diag.observe(s)
        assert diag.check(it, s, diagnose=False) == []
    events = feed(diag, [won] * 3, start=200)
    by_state = {e.state: e for e in events}
    assert [e.state for e in events] == ["stalled", "d_overpowering", "mode_collapse"]
    assert by_state["stalled"].since == 1 and by_state["d_overpowering"].since == 50
    assert by_state["stalled"].follows is None
    assert by_state["stalled"].explains == ["d_overpowering", "mode_collapse"]
    assert by_state["d_overpowering"].follows == by_state["mode_collapse"].follows == "stalled"
    cause, effect = actions.message(by_state["stalled"]), actions.message(by_state["mode_collapse"])
    assert "stalled from iteration 1 (raised at 220), the cause of d_overpowering and " in cause
    assert "Try: check that G learns" in cause
    assert "following from stalled" in effect and "Try:" not in effect
    episode = actions.episode(by_state["mode_collapse"], "warn")
    assert episode["follows"] == "stalled" and episode["start"] == 50
    # A state raised alone, with nothing that explains it holding, is its own cause.
    alone = Diagnoser(Thresholds(), patience=1, loss=GANLoss("non_saturating"))
    [event] = feed(alone, [probe(diversity=0.05)])
    assert event.follows is None and "Try: PacGAN" in actions.message(event)


@pytest.mark.parametrize(
    ("max_iters", "given", "expected"),
    [
        (300, (None, None), (15, 30)),
        (800, (None, None), (40, 80)),
        (2000, (None, None), (50, 200)),
        (None, (None, None), (50, 200)),
        (300, (25, 100), (25, 100)),  # set explicitly: kept
    ],
)
def test_probes_and_warm_up_follow_a_short_run(max_iters, given, expected) -> None:
    monitor = HealthMonitor("unused", every_n_iters=given[0], warmup_iters=given[1])
    monitor._scale_to(max_iters)
    assert (monitor.every_n_iters, monitor.warmup_iters) == expected


def test_health_imports_nothing_from_the_callbacks() -> None:
    """The rules and actions stay pure: the package tree's imports point down, never back up."""
    root = Path(actions.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "from ganforge.callbacks" not in text and "import ganforge.callbacks" not in text


def test_vanishing_g_gradient_asks_the_loss_record_whether_it_saturates() -> None:
    starved = [probe(d_fake=0.01)] * 2
    for loss, raised in (
        (GANLoss("minimax"), True),
        (GANLoss("non_saturating"), False),
        # A loss of the user's own, under any name: its record's fact decides.
        (GANLoss("mine", losses.minimax_d, losses.minimax_g, saturating=True), True),
        (GANLoss("minimax", losses.minimax_d, losses.non_saturating_g), False),
    ):
        events = feed(Diagnoser(Thresholds(), patience=2, loss=loss), starved)
        assert ("vanishing_g_gradient" in [e.state for e in events]) == raised, loss


def test_divergence_is_measured_against_the_first_probe() -> None:
    diag = Diagnoser(Thresholds(divergence_factor=100), patience=1, loss=GANLoss("hinge"))
    # The first probe is the reference (a loss floored at 1): g_grad_norm 2, d_loss 1.
    feed(diag, [probe(g_grad_norm=2.0, d_loss=0.01)])
    assert diag.reference("g_grad_norm") == 2.0 and diag.reference("d_loss") == 1.0
    assert feed(diag, [probe(g_grad_norm=199.0, d_loss=99.0)]) == []
    [event] = feed(diag, [probe(g_grad_norm=200.0, d_loss=float("nan"))])
    assert event.state == "divergence"
    assert event.evidence["g_grad_norm_factor"] == 100.0
    assert str(event.evidence["d_loss"]) == "nan"


def test_stalled_counts_evaluations_without_improvement() -> None:
    diag = Diagnoser(Thresholds(stall_evals=2), patience=1, loss=GANLoss("non_saturating"))
    for it, fid in [(100, 80.0), (200, 60.0), (300, 59.9), (400, 61.0)]:
        diag.add_evaluation(it, {"fid": fid})
        events = feed(diag, [probe()], start=it + 50)
        # 59.9 is not 1 % better than 60: evaluations 300 and 400 did not improve.
        assert [e.state for e in events] == (["stalled"] if it == 400 else [])
    assert events[0].evidence == {"fid": 61.0, "best_fid": 60.0, "evals_without_improvement": 2}


def test_a_2d_run_at_every_mode_is_not_stalled_and_dropped_modes_are_collapse() -> None:
    diag = Diagnoser(Thresholds(stall_evals=2), patience=1, loss=GANLoss("non_saturating"))
    for it in (100, 200, 300):
        diag.add_evaluation(it, {"modes_captured": 8.0, "n_modes": 8.0})
    assert feed(diag, [probe()], start=350) == []
    diag.add_evaluation(400, {"modes_captured": 3.0, "n_modes": 8.0})
    [event] = feed(diag, [probe()], start=450)
    assert event.state == "mode_collapse"
    assert event.evidence == {"modes_captured": 3.0, "best_modes_captured": 8.0}


def test_stacked_mnist_modes_drive_collapse_and_stall_like_the_2d_count() -> None:
    # val/modes (the Stacked-MNIST metric's mode count in the registry) is read as the 2-D count
    # is: a drop to collapse_modes of its best is mode_collapse; short of all 1,000 and flat for
    # stall_evals evaluations is stalled; at 1,000 it is not.
    diag = Diagnoser(Thresholds(stall_evals=2), patience=1, loss=GANLoss("non_saturating"))
    for it in (100, 200, 300):
        diag.add_evaluation(it, {"modes": 1000.0, "n_modes": 1000.0})
    assert feed(diag, [probe()], start=350) == []
    diag.add_evaluation(400, {"modes": 300.0, "n_modes": 1000.0})
    [event] = feed(diag, [probe()], start=450)
    assert event.state == "mode_collapse"
    assert event.evidence == {"modes": 300.0, "best_modes": 1000.0}
    flat = Diagnoser(Thresholds(stall_evals=2), patience=1, loss=GANLoss("non_saturating"))
    for it in (100, 200, 300):
        flat.add_evaluation(it, {"modes": 500.0, "n_modes": 1000.0})
    assert [e.state for e in feed(flat, [probe()], start=350)] == ["stalled"]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("d_accuracy", 1.5, r"callbacks\.health\.d_accuracy=1\.5 must be a number in \(0, 1\]"),
        ("every_n_iters", 0, r"callbacks\.health\.every_n_iters=0 must be a positive integer"),
        ("on_mode_collapse", "halt", r"callbacks\.health\.on_mode_collapse='halt' must be one"),
        ("divergence_factor", 1, r"callbacks\.health\.divergence_factor=1 must be > 1"),
        ("stall_evals", 0, r"callbacks\.health\.stall_evals=0 must be a positive integer"),
    ],
)
def test_settings_are_checked_naming_the_key(key: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HealthMonitor("out", **{key: value})


# --- actions ------------------------------------------------------------------------------------
def test_wandb_alert_per_raise_and_clear_and_failures_do_not_stop_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = []

    class Run:
        def alert(self, **kwargs: Any) -> None:
            sent.append(kwargs)

    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    logger._experiment = Run()  # what logger.experiment returns once the run exists
    raised = Event("mode_collapse", 300, 250, False, {"diversity": 0.05})
    actions.alert([logger], raised)
    actions.alert([logger], Event("mode_collapse", 500, 450, True, {"diversity": 0.7}))
    assert [(a["title"], a["level"]) for a in sent] == [
        ("ganforge: mode_collapse raised", "WARN"),
        ("ganforge: mode_collapse cleared", "INFO"),
    ]
    assert "from iteration 250 (raised at 300): diversity=0.05" in sent[0]["text"]
    assert "README.md#health-mode-collapse" in sent[0]["text"]

    class Offline:
        def alert(self, **kwargs: Any) -> None:
            raise ConnectionError("no network")

    logger._experiment = Offline()
    actions.alert([logger], raised)
    assert "the W&B alert failed (no network)" in caplog.text


def test_every_state_has_remedies_and_a_readme_entry() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for state in STATES:
        assert actions.REMEDIES[state]
        assert f'<a id="{actions.anchor(state).split("#")[1]}"></a>' in readme, state


def test_state_survives_a_checkpoint(tmp_path: Path) -> None:
    monitor = HealthMonitor(str(tmp_path))
    monitor.diagnoser = Diagnoser(Thresholds(), 3, GANLoss("non_saturating"))
    feed(monitor.diagnoser, [probe(), *[probe(diversity=0.01)] * 3], start=200)
    monitor.episodes = [actions.episode(Event("mode_collapse", 220, 200, False,
                                              {"diversity": 0.01}), "warn")]  # fmt: skip
    monitor.history = [(200, probe())]
    monitor.real_distance = 2.5
    path = tmp_path / "state.pt"
    torch.save(monitor.state_dict(), path)
    restored = HealthMonitor(str(tmp_path))
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.episodes == monitor.episodes and restored.history == monitor.history
    restored.on_train_start(
        SimpleNamespace(
            fast_dev_run=False,
            sanity_checking=False,
            callbacks=[],
            is_global_zero=False,
            datamodule=None,
        ),
        SimpleNamespace(loss=GANLoss("non_saturating")),
    )
    assert restored.diagnoser.active() == ["mode_collapse"]
    assert restored.diagnoser.first == monitor.diagnoser.first


def test_distance_accuracy_and_update_ratio_by_hand() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert signals.mean_pairwise_distance(x) == pytest.approx((5 + 0 + 5) / 3)
    real, fake = torch.tensor([2.0, 1.0, -1.0, 3.0]), torch.tensor([-1.0, 0.5])
    assert signals.d_accuracy(real, fake, GANLoss("non_saturating")) == (0.75, 0.5)
    assert signals.d_accuracy(real, fake, GANLoss("lsgan")) == (0.75, 0.5)
    # A critic: split at the midpoint of the means (1.25 and -0.25 -> 0.5).
    assert signals.d_accuracy(real, fake, GANLoss("wasserstein")) == (0.75, 0.5)
    # rpgan's scores have no absolute zero (only D(x) - D(G(z)) counts): the midpoint too.
    assert signals.d_accuracy(real + 10, fake + 10, GANLoss("rpgan")) == (0.75, 0.5)
    assert signals.d_accuracy(real + 10, fake + 10, GANLoss("hinge")) == (1.0, 0.0)
    # The threshold is the record's, whatever the loss is called.
    mine = GANLoss("mine", losses.lsgan_d, losses.lsgan_g, threshold=1.5)
    assert signals.d_accuracy(real, fake, mine) == (0.5, 1.0)
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    before = signals.snapshot([w])
    with torch.no_grad():
        w += torch.tensor([0.0, 0.5])
    assert signals.update_ratio(before, [w]) == pytest.approx(0.1)
