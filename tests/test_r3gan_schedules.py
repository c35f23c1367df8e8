"""The schedules (ganforge.schedules): R3GAN's cosine without warm-up at its key points, the EMA
half-life, what a run applies and logs at each iteration, exact across a resume, each bad key one
ConfigError naming it; the R3GAN presets' settings and variants."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from conftest import compose_train, quiet_trainer, toy_system
from ganforge.errors import ConfigError
from ganforge.reproduce import Options, compose_variants
from ganforge.schedules import Cosine, Schedules, tied_to_run_length
from ganforge.settings import Settings
from ganforge.train import train


def r3gan_reference(cur_nimg: float, base: float, final: float, total: float) -> float:
    """The authors' cosine_decay_with_warmup without warm-up or hold, written out from
    brownvc/R3GAN training/training_loop.py:29-38, in images."""
    decay = 0.5 * (1 + math.cos(math.pi * cur_nimg / total))
    value = base + (1 - decay) * (final - base)
    return final if cur_nimg > total else value


# --- the pure functions --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("iteration", "expected"),
    [
        (0, 2e-4),
        (50, (2e-4 + 5e-5) / 2),
        (25, 2e-4 - 1.5e-4 * (1 - math.sqrt(0.5)) / 2),
        (100, 5e-5),
        (1000, 5e-5),
    ],
    ids=["start", "middle", "quarter", "end", "beyond"],
)
def test_cosine_at_its_key_points(iteration: int, expected: float) -> None:
    assert Cosine(2e-4, 5e-5, 100)(iteration) == pytest.approx(expected, rel=1e-12)


def test_cosine_is_the_authors_in_images() -> None:
    # A span stated in images: 2e7 images at batch 512 is 39,062.5 iterations.
    s = Settings(
        max_iters=50000, lr_decay="cosine", decay_to=0.25, decay_images=2e7, batch_size=512
    )
    factor = Schedules.of(s).lr
    assert factor is not None
    for it in (0, 1, 19531, 39062, 39063, 45000):
        assert 2e-4 * factor(it) == pytest.approx(r3gan_reference(it * 512, 2e-4, 5e-5, 2e7))
    # The per-device batch times the devices counts the images (data.batch_size is per device).
    assert Schedules.of(s, world_size=4).span == pytest.approx(2e7 / 2048)


def test_ema_half_life_is_ramped_from_zero() -> None:
    s = Settings(max_iters=100, ema_half_life=1000.0, batch_size=10, decay_iters=40)
    sched = Schedules.of(s)
    assert sched.ema_beta(1) == 0.0  # half-life 0 before the first update: a plain copy
    # After update n the half-life is the ramp's value at n - 1 iterations (images before it).
    mid = 1000.0 * (1 - math.cos(math.pi * 20 / 40)) / 2
    assert sched.ema_beta(21) == pytest.approx(0.5 ** (10 / mid))
    assert sched.ema_beta(41) == sched.ema_beta(500) == pytest.approx(0.5 ** (10 / 1000))


def test_without_schedules_nothing_changes() -> None:
    sched = Schedules.of(Settings(max_iters=10))
    assert sched.lr is None and sched.penalty_scale(5) == 1.0
    assert sched.ema_beta(3) == pytest.approx(min(0.999, 4 / 13))  # the warm-up rule
    opts = [torch.optim.Adam([torch.zeros(1, requires_grad=True)]) for _ in range(2)]
    assert sched.logged(3, opts) == {}


def test_the_checkpoint_keeps_no_copy_of_the_lr_schedule() -> None:
    # The config owns the schedule: a resumed run with another span follows it in every value.
    lr = Schedules.of(Settings(max_iters=10, lr_decay="cosine")).lr
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    assert torch.optim.lr_scheduler.LambdaLR(opt, lr).state_dict()["lr_lambdas"] == [None]


def test_which_schedules_follow_the_run_length(tmp_path: Path) -> None:
    # ganforge-reproduce's extend=true needs this: a shorter run took other values.
    assert tied_to_run_length(Settings(max_iters=10, lr_decay="linear")) == ["optim.decay=linear"]
    stacked = compose_train(tmp_path, "experiment=r3gan_stacked_mnist").system
    assert tied_to_run_length(stacked) == [
        "optim.decay=cosine",
        "optim.beta2_to",
        "system.penalty_to",
        "system.ema_half_life",
    ]
    assert tied_to_run_length(compose_train(tmp_path, "experiment=r3gan_cifar10").system) == []
    assert tied_to_run_length(Settings(max_iters=10)) == []


# --- in a run ------------------------------------------------------------------------------------
def test_a_run_applies_and_logs_every_schedule() -> None:
    opt = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.0, 0.9))
    kw = dict(lr_decay="cosine", decay_to=0.25, beta2_to=0.99, penalty_to=0.1, r1_gamma=1.0)
    kw |= dict(r2_gamma=0.5, ema_half_life=64.0, batch_size=32, decay_iters=4)
    system, dm = toy_system(max_iters=6, g_optimizer=opt, d_optimizer=opt, **kw)
    used: list[tuple[float, float, float]] = []
    logged: list[dict[str, float]] = []
    penalties: list[float] = []
    step, log, d_pen = system._step_lr_decay, system.log_iteration_metrics, system._judge

    def record_then_step() -> None:
        g, d = system.trainer.optimizers
        used.append(
            (g.param_groups[0]["lr"], d.param_groups[0]["lr"], g.param_groups[0]["betas"][1])
        )
        step()

    def record_penalties(*args, **kwargs):
        out = d_pen(*args, **kwargs)
        penalties.append(system.schedules.penalty_scale(system.iteration))
        return out

    system._step_lr_decay = record_then_step
    system.log_iteration_metrics = lambda m: (logged.append(dict(m)), log(m))[1]
    system._judge = record_penalties
    quiet_trainer().fit(system, dm)
    lr = [2e-4 * Cosine(1, 0.25, 4)(n) for n in range(6)]
    beta2 = [Cosine(0.9, 0.99, 4)(n) for n in range(6)]
    expected = [(a, a, b) for a, b in zip(lr, beta2, strict=True)]
    assert [v for row in used for v in row] == pytest.approx([v for row in expected for v in row])
    assert penalties == pytest.approx([Cosine(1, 0.1, 4)(n) for n in range(6)])
    assert [m["train/lr_g"] for m in logged] == pytest.approx(lr)
    assert [m["train/lr_d"] for m in logged] == pytest.approx(lr)
    assert [m["train/beta2"] for m in logged] == pytest.approx(beta2)
    assert [m["train/r1_gamma"] for m in logged] == pytest.approx(penalties)
    assert [m["train/r2_gamma"] for m in logged] == pytest.approx([p / 2 for p in penalties])
    assert [m["train/ema_beta"] for m in logged] == pytest.approx(
        [0.5 ** (32 / max(Cosine(0, 64, 4)(n), 1e-8)) for n in range(6)]
    )
    assert "train/gp_weight" not in logged[0]  # only weights that are on


def test_sgd_with_a_beta2_schedule_is_one_error() -> None:
    opt = functools.partial(torch.optim.SGD, lr=0.1)
    system, dm = toy_system(max_iters=2, g_optimizer=opt, d_optimizer=opt, beta2_to=0.99)
    with pytest.raises(ConfigError, match=r"optim\.beta2_to=0\.99.*optim=adam"):
        quiet_trainer().fit(system, dm)


SCHEDULED = [
    "data=toy_ring",
    "model=mlp",
    "model.hidden=16",
    "model.depth=2",
    "data.n_samples=256",
    "data.batch_size=32",
    "logger=csv",
    "callbacks=default",
    "callbacks.samples.every_n_iters=1000",
    "train.log_every=1",
    "optim.decay=cosine",
    "optim.decay_to=0.25",
    "optim.betas=[0.0,0.9]",
    "optim.beta2_to=0.99",
    "optim.decay_images=256",  # 8 iterations
    "system.r1_gamma=1",
    "system.penalty_to=0.1",
    "system.ema_half_life=128",
]


def test_schedules_are_exact_across_a_resume(tmp_path: Path) -> None:
    train(compose_train(tmp_path / "whole", *SCHEDULED, "train.max_iters=10"))
    train(compose_train(tmp_path / "half", *SCHEDULED, "train.max_iters=4"))
    first = tmp_path / "half" / "checkpoints" / "last.ckpt"
    cfg = compose_train(
        tmp_path / "resumed", *SCHEDULED, "train.max_iters=10", f"ckpt_path={first}"
    )
    train(cfg)
    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    for key, value in whole["state_dict"].items():  # G, D and G_ema: the EMA weights too
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(whole["optimizer_states"], resumed["optimizer_states"], strict=True):
        assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]
        assert a["param_groups"][0]["betas"] == b["param_groups"][0]["betas"]
    assert whole["optimizer_states"][0]["param_groups"][0]["betas"][1] == 0.99  # past the span
    # The logged values of the resumed half are the straight run's.
    rows = {
        name: _column(tmp_path / name, "train/lr_g") | _column(tmp_path / name, "train/ema_beta")
        for name in ("whole", "resumed")
    }
    assert rows["resumed"] and rows["resumed"].items() <= rows["whole"].items()


def _column(run: Path, name: str) -> dict[tuple[str, int], float]:
    import csv

    (path,) = run.rglob("metrics.csv")
    with path.open() as f:
        return {
            (name, int(row["step"])): float(row[name])
            for row in csv.DictReader(f)
            if row.get(name) not in (None, "")
        }


# --- bad inputs ----------------------------------------------------------------------------------
BAD = [
    ({"lr_decay": "cos"}, r"optim\.decay='cos' must be 'none', 'linear' or 'cosine'"),
    ({"lr_decay": "cosine", "decay_to": 2.0}, r"optim\.decay_to=2\.0 must be a number in \[0, 1\]"),
    ({"lr_decay": "cosine", "decay_to": -0.1}, r"optim\.decay_to=-0\.1"),
    ({"beta2_to": 1.0}, r"optim\.beta2_to=1\.0 must be in \[0, 1\)"),
    ({"penalty_to": 1.5}, r"system\.penalty_to=1\.5 must be a number in \[0, 1\]"),
    ({"ema_half_life": -5}, r"system\.ema_half_life=-5 must be a positive number"),
    ({"ema_half_life": 100, "ema_decay": None}, r"system\.ema_half_life=100.*system\.ema_decay"),
    ({"decay_iters": 10, "decay_images": 100, "batch_size": 4}, r"optim\.decay_iters=10 and optim"),
    ({"decay_iters": 0}, r"optim\.decay_iters=0 must be a positive integer"),
    ({"decay_images": 1000}, r"optim\.decay_images=1000.*optim\.decay_iters"),
    ({"decay_images": -3, "batch_size": 4}, r"optim\.decay_images=-3 must be a positive number"),
    ({"lr_decay": "cosine", "max_iters": None}, r"optim\.decay=cosine.*span is unstated"),
    ({"penalty_to": 0.1, "max_iters": None}, r"system\.penalty_to .*optim\.decay_iters=N"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[m.split(r"\.")[1][:14] for _, m in BAD])
def test_bad_schedule_settings_are_one_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**{"max_iters": 100, **kwargs})


def test_a_bad_key_on_the_command_line_names_it(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, *SCHEDULED[:8], "optim.decay_to=1.5", "train.max_iters=2")
    with pytest.raises(ConfigError, match=r"optim\.decay_to=1\.5"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


# --- the presets ---------------------------------------------------------------------------------
def test_r3gan_cifar10_is_the_authors_config_e(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=r3gan_cifar10")
    m, s, o = cfg.model, cfg.system, cfg.optim
    assert (m.width, m.blocks, m.expansion, m.group_size, m.z_dim) == (768, 2, 2, 16, 64)
    assert m.conditional == "projection" and cfg.data.batch_size == 512 and cfg.data.flip
    assert (s.r1_gamma, s.r2_gamma, s.penalty_to, s.ema_half_life) == (0.05, 0.05, 0.1, 5e6)
    assert (o.decay, o.lr_g * o.decay_to, list(o.betas), o.beta2_to) == (
        "cosine",
        5e-5,
        [0, 0.9],
        0.99,
    )
    assert s.decay_images == 2e7 and s.lr_decay == "cosine"


def test_r3gan_stacked_mnist_variants_are_the_loss_ablation() -> None:
    variants = {v.name: v.cfg for v in compose_variants(Options(experiment="r3gan_stacked_mnist"))}
    assert list(variants) == ["RpGAN_R1_R2", "NSGAN_R1_R2", "RpGAN_R1", "NSGAN_R1"]
    for name, cfg in variants.items():
        assert cfg.loss.name == ("rpgan" if name.startswith("Rp") else "non_saturating")
        assert cfg.system.r1_gamma == 0.05
        assert cfg.system.r2_gamma == (0.05 if name.endswith("R2") else 0)
        assert cfg.model.name == "r3gan" and cfg.data.name == "stacked_mnist"
        assert list(cfg.metrics.names) == ["stacked_modes"]
