"""The adversarial game: who moves when, what is counted, what a checkpoint restores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import quiet_trainer, toy_system
from ganforge.errors import ConfigError
from ganforge.losses import GANLoss
from ganforge.models import mlp
from ganforge.system import GANSystem


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class SpySystem(GANSystem):
    """Wraps each optimizer's step to record which network it moved."""

    def configure_optimizers(self):
        opt_g, opt_d = super().configure_optimizers()
        self.events: list[tuple[str, bool, bool]] = []
        for name, opt in (("G", opt_g), ("D", opt_d)):
            self._spy(name, opt)
        return [opt_g, opt_d]

    def _spy(self, name: str, opt: torch.optim.Optimizer) -> None:
        step = opt.step

        def spied_step(*args, **kwargs):
            g0, d0 = snapshot(self.G), snapshot(self.D)
            out = step(*args, **kwargs)
            self.events.append(
                (name, not same(g0, snapshot(self.G)), not same(d0, snapshot(self.D)))
            )
            return out

        opt.step = spied_step


def test_d_step_moves_only_d_and_g_step_moves_only_g() -> None:
    system, dm = toy_system(max_iters=3)
    system.__class__ = SpySystem
    quiet_trainer().fit(system, dm)
    assert [e[0] for e in system.events] == ["D", "G"] * 3
    for name, g_moved, d_moved in system.events:
        assert (g_moved, d_moved) == ((False, True) if name == "D" else (True, False))


def test_n_critic_counts_g_updates_as_iterations() -> None:
    system, dm = toy_system(max_iters=4, n_critic=5)
    system.__class__ = SpySystem
    trainer = quiet_trainer()
    trainer.fit(system, dm)
    names = [e[0] for e in system.events]
    assert system.iteration == 4 == names.count("G")
    assert names == (["D"] * 5 + ["G"]) * 4
    # Lightning's own counter counts every optimizer step: it is not the iteration count.
    assert trainer.global_step == 24


def test_n_critic_uses_a_fresh_real_batch_per_d_step() -> None:
    system, dm = toy_system(max_iters=1, n_critic=3)
    seen: list[torch.Tensor] = []
    d_forward = system.D.forward
    system.D.forward = lambda x: (seen.append(x.detach().clone()), d_forward(x))[1]
    quiet_trainer().fit(system, dm)
    # D calls per critic step: real, fake; the first of each pair is the real chunk.
    reals = seen[0:6:2]
    assert all(r.shape[0] == 32 for r in reals)
    assert not torch.equal(reals[0], reals[1]) and not torch.equal(reals[1], reals[2])


@pytest.mark.parametrize("ema_start", [0, 2])
def test_ema_follows_the_recurrence(ema_start: int) -> None:
    decay = 0.3  # warm-up rules the first updates, the cap 0.3 the later ones
    system, dm = toy_system(max_iters=5, ema_decay=decay, ema_start=ema_start)
    ema = snapshot(system.G)  # G_ema starts as a copy of the initial G
    update = system._update_ema

    def recurrence_then_update() -> None:
        nonlocal ema
        g = snapshot(system.G)  # G right after its k-th step
        n = system.iteration - ema_start
        d = min(decay, (1 + n) / (10 + n)) if n > 0 else 0.0
        ema = [d * e + (1 - d) * p for e, p in zip(ema, g, strict=True)]
        update()

    system._update_ema = recurrence_then_update
    quiet_trainer().fit(system, dm)
    assert system.iteration == 5
    for expected, actual in zip(ema, snapshot(system.G_ema), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7)
    assert not same(snapshot(system.G_ema), snapshot(system.G))


def test_logs_against_iterations(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    system, dm = toy_system(max_iters=6, n_critic=2, log_every=2)
    logger = CSVLogger(tmp_path, name="", version="")
    quiet_trainer(logger=logger).fit(system, dm)
    logger.save()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert {"step", "train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= set(header)
    steps = [int(line.split(",")[header.index("step")]) for line in lines[1:]]
    assert steps == [1, 2, 4, 6]  # iterations, not global_step (which reaches 18)


def test_grad_clipping_bounds_the_norm_and_logs_it() -> None:
    system, dm = toy_system(max_iters=2, grad_clip_d=1e-3, log_grad_norm=True)
    clipped = []
    hook = system.on_before_optimizer_step

    def after_clip(optimizer) -> None:
        hook(optimizer)
        if optimizer is system.trainer.optimizers[1]:
            grads = [p.grad for p in system.D.parameters()]
            clipped.append(torch.nn.utils.get_total_norm(grads).item())

    system.on_before_optimizer_step = after_clip
    quiet_trainer().fit(system, dm)
    assert len(clipped) == 2 and max(clipped) <= 1e-3 * (1 + 1e-4)
    # The logged norm is the one before clipping, so it exceeds the clip threshold here.
    assert system.last_metrics["train/d_grad_norm"] > 1e-3
    assert system.last_metrics["train/g_grad_norm"] > 0


def test_fixed_noise_is_a_buffer_in_the_state_dict() -> None:
    system, _ = toy_system()
    assert "fixed_z" in system.state_dict()
    other, _ = toy_system()
    assert torch.equal(system.fixed_z, other.fixed_z)  # same seed, same grid noise


def log_rows(system: GANSystem) -> dict[int, dict[str, float]]:
    """What the system logs, by GAN iteration (spied on its one logging method)."""
    rows: dict[int, dict[str, float]] = {}
    log = system.log_iteration_metrics

    def record(metrics: dict[str, float]) -> None:
        log(metrics)
        rows.setdefault(system.iteration, {}).update(metrics)

    system.log_iteration_metrics = record
    return rows


def spy_returns(monkeypatch: pytest.MonkeyPatch, name: str) -> list[float]:
    """The values the penalty function `name` (of an entry of `regularizers.PENALTIES`, as the
    system iterates them) returns, in call order."""
    import dataclasses

    import ganforge.system

    values: list[float] = []

    def spied(entry):
        def spy(function):  # the entry's own forward, or its reading of D's loss forward
            def recorded(*args, **kwargs):
                out = function(*args, **kwargs)
                values.append(float(out.detach()))
                return out

            return recorded if function is not None else None

        return dataclasses.replace(
            entry, function=spy(entry.function), of_outputs=spy(entry.of_outputs)
        )

    table = ganforge.system.PENALTIES
    assert name in [p.function.__name__ for p in table]
    spies = tuple(spied(p) if p.function.__name__ == name else p for p in table)
    monkeypatch.setattr(ganforge.system, "PENALTIES", spies)
    return values


def test_wgan_gp_logs_its_gradient_penalty_beside_d_loss(monkeypatch) -> None:
    raw_gp = spy_returns(monkeypatch, "gradient_penalty")
    system, dm = toy_system(max_iters=3, n_critic=2, loss=GANLoss("wasserstein"), gp_weight=10.0)
    rows = log_rows(system)
    quiet_trainer().fit(system, dm)
    assert sorted(rows) == [1, 2, 3] and len(raw_gp) == 6
    for it, row in rows.items():
        assert "train/r1" not in row and "train/d_aux" not in row
        # The last of the iteration's two D updates, weighted as it was added to d_loss.
        assert row["train/gp"] == pytest.approx(10.0 * raw_gp[2 * it - 1], rel=1e-6)
        assert row["train/d_loss"] == pytest.approx(
            row["train/d_adv"] + row["train/gp"], rel=1e-5, abs=1e-6
        )


def test_lazy_r1_is_logged_where_it_is_applied(monkeypatch) -> None:
    raw_r1 = spy_returns(monkeypatch, "r1_penalty")
    system, dm = toy_system(max_iters=4, r1_gamma=4.0, r1_interval=2)
    rows = log_rows(system)
    quiet_trainer().fit(system, dm)
    # Applied in the D updates of iterations 1 and 3 (the counter is 0 and 2 before them).
    assert [it for it in sorted(rows) if "train/r1" in rows[it]] == [1, 3] and len(raw_r1) == 2
    for it, row in rows.items():
        assert "train/gp" not in row
        r1 = row.get("train/r1", 0.0)
        if it in (1, 3):
            # Scaled as applied: 0.5 * r1_gamma * r1_interval * R1.
            assert r1 == pytest.approx(0.5 * 4.0 * 2 * raw_r1[it // 2], rel=1e-6) and r1 > 0
        assert row["train/d_loss"] == pytest.approx(row["train/d_adv"] + r1, rel=1e-5, abs=1e-6)


def test_acgan_logs_its_auxiliary_term_beside_d_loss() -> None:
    G = mlp.Generator(z_dim=8, hidden=32, depth=2, dim=2, conditional="acgan", n_classes=8)
    D = mlp.Discriminator(hidden=32, depth=2, dim=2, conditional="acgan", n_classes=8)
    system, dm = toy_system(generator=G, discriminator=D, max_iters=2)
    rows = log_rows(system)
    quiet_trainer().fit(system, dm)
    for row in rows.values():
        assert row["train/d_aux"] > 0
        assert row["train/d_loss"] == pytest.approx(
            row["train/d_adv"] + row["train/d_aux"], rel=1e-5, abs=1e-6
        )


def test_g_and_d_disagreeing_on_conditioning_is_one_clear_error() -> None:
    # Whether the model is conditional, and on how many classes, is the networks' own fact.
    G = mlp.Generator(z_dim=8, hidden=16, depth=1, dim=2)
    D = mlp.Discriminator(hidden=16, depth=1, dim=2, conditional="projection", n_classes=8)
    with pytest.raises(ConfigError, match=r"n_classes=None .*conditional=projection.*model\.cond"):
        toy_system(generator=G, discriminator=D)
    G = mlp.Generator(z_dim=8, hidden=16, depth=1, dim=2, conditional="projection", n_classes=8)
    system = toy_system(generator=G, discriminator=D, n_fixed=16)[0]
    assert system.n_classes == 8 and system.fixed_y.tolist() == [c for c in range(8) for _ in "ab"]
