"""GANSystem: the LightningModule around a generator and a discriminator.

One `training_step` is one GAN iteration: `n_critic` discriminator updates, then `g_steps`
generator updates (1 unless a paper's code takes more), with manual optimization so that each
network's step only ever moves that network. The iteration counter (GAN iterations; G updates
when g_steps is 1) is the x-axis of every log, the run length and every interval, and the EMA
and the learning-rate decay step once per iteration; Lightning's `global_step` counts both
optimizers' steps and is never shown to users.

Conditional models (`conditional` = projection or acgan) get labels: real images come with
theirs, fakes are drawn for labels sampled uniformly, and the fixed noise has one row per class.
DiffAugment, when on, sits between every image and D, in both updates and in the penalties.

What is not the game lives beside it: the noise stream and its DDP slicing (`noise.py`), what a
NaN loss does (`nan_guard.py`), the exact-resume record (`resume.py`), the EMA (`ema.py`), the
optimizers and their schedules (`optimizers.py`, `schedules.py`), gradient clipping
(`gradients.py`) and D's penalties (`regularizers.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge import ema, optimizers
from ganforge.augment import diff_augment, parse_policy
from ganforge.compile import CompileReport, compile_system
from ganforge.errors import ConfigError
from ganforge.gradients import clip_or_measure
from ganforge.losses import GANLoss
from ganforge.models.protocols import (
    check_conditional_pair,
    check_discriminator,
    check_generator,
    run_generator,
)
from ganforge.nan_guard import NanGuard
from ganforge.noise import TrainingNoise, fixed_inputs
from ganforge.optimizers import OptimizerFactory
from ganforge.regularizers import PENALTIES, Judged, judge_with_penalties
from ganforge.resume import ResumeRecord
from ganforge.schedules import Schedules, ema_decay_at  # noqa: F401 (benchmark.py imports it)
from ganforge.settings import Settings


class GANSystem(L.LightningModule):
    """The parts (G, D, the loss, an optimizer factory per network), `meta` (what the run was
    trained on, stored in the checkpoint record as it is) and the training settings as keywords:
    the fields of `ganforge.settings.Settings`, e.g. `n_critic=5, ema_decay=None`."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        g_optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory,
        meta: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        # The interfaces first: a network without them fails here with one message naming the
        # option that built it, not with an AttributeError deep in the first step.
        check_generator(generator)
        check_discriminator(discriminator)
        check_conditional_pair(generator, discriminator)
        self.settings = s = Settings(**settings)
        self.nan_guard = NanGuard(s.nan_policy, s.max_skips, s.max_consecutive_skips)
        self.schedules = Schedules.of(s)  # rebuilt for the world size in configure_optimizers
        # Plain values only (modules and factories pickled into the checkpoint would break
        # weights_only loading); the record describes the networks instead.
        self.save_hyperparameters({**dataclasses.asdict(s), "meta": meta}, logger=False)
        self.automatic_optimization = False
        self.G, self.D, self.loss = generator, discriminator, loss
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.n_critic, self.max_iters = s.n_critic, s.max_iters
        # The networks' facts, read once: G's classes (None: unconditional), how D reads labels
        # (models/protocols.py), and PacGAN's pack (D scores packs of `pack` samples).
        self.n_classes: int | None = generator.n_classes
        self.conditional: str = discriminator.conditional
        self.pack: int = discriminator.pack
        self.augment_policy = parse_policy(s.diffaugment)
        self.G_ema = None if s.ema_decay is None else ema.averaged_copy(generator)
        self.iteration = 0  # GAN iterations = generator updates; saved in the checkpoint
        z, y = fixed_inputs(s.n_fixed, s.seed, generator.z_dim, self.n_classes)
        # Persistent buffers: saved and restored with the weights, so grids stay comparable.
        # (fixed_y is None, and absent from the state dict, for an unconditional model.)
        self.register_buffer("fixed_z", z)
        self.register_buffer("fixed_y", y)
        self.noise = TrainingNoise(s.seed, generator.z_dim, self.n_classes)
        self.last_metrics: dict[str, float] = {}
        self._grad_norms: dict[str, Tensor] = {}
        self.resume = ResumeRecord()  # the exact-resume state in the checkpoint (resume.py)
        self.compile_report = CompileReport()

    # --- sampling -----------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return self.G.z_dim

    def training_noise(self, n: int) -> tuple[Tensor, Tensor | None]:
        """Latents (and labels, if conditional) for this rank's n fakes of one update."""
        trainer = self._trainer
        world, rank = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
        return self.noise.draw(n, self.fixed_z.device, world, rank)

    def sample_y(self, n: int, generator: torch.Generator | None = None) -> Tensor | None:
        """Labels drawn uniformly over the classes, or None for an unconditional model."""
        if self.n_classes is None:
            return None
        device = self.fixed_z.device if generator is None else generator.device
        y = torch.randint(self.n_classes, (n,), device=device, generator=generator)
        return y.to(self.fixed_z.device)

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None, ema: bool = True) -> Tensor:
        """Samples in the data's range, from the EMA generator when there is one, in eval mode.
        A conditional model draws the classes `y`, uniformly sampled ones when y is None."""
        net = self.G_ema if ema and self.G_ema is not None else self.G
        z = z.to(self.fixed_z.device)
        if self.n_classes is not None:
            y = self.sample_y(z.shape[0]) if y is None else y.to(z.device)
        was_training = net.training
        net.eval()
        try:
            return run_generator(net, z, y)
        finally:
            net.train(was_training)

    def discriminate(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """D as trained, the one way D is called: its logits on DiffAugment(x) (labels y, None
        when unconditional), and its per-sample class logits when it is an ACGAN (else None)."""
        if self.augment_policy:
            x = diff_augment(x, self.augment_policy)
        if self.conditional == "acgan":
            return self.D.judge(x, y)
        return (self.D(x) if y is None else self.D(x, y)), None

    # --- the GAN iteration -------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        reals = batch["x"].chunk(self.n_critic)
        labels = self._real_labels(batch, len(reals))
        for real, y_real in zip(reals, labels, strict=True):
            with self.toggled_optimizer(opt_d):
                z, y_fake = self.training_noise(real.shape[0])
                with torch.no_grad():
                    # D sees detached fakes: its step must not move G.
                    fake = run_generator(self.G, z, y_fake)
                (d_real, c_real), (d_fake, _), penalties = self._judge(real, fake, y_real, y_fake)
                d_adv = self.loss.discriminator(d_real, d_fake)
                # ACGAN's classifier learns from real labels only: a fake's label is what G was
                # asked for, not what it drew.
                d_aux = self._aux_loss(c_real, y_real)
                d_loss = d_adv + d_aux + sum(penalties.values(), 0.0)
                # The terms, logged beside the sum: d_aux for an ACGAN (else it is 0.0), each
                # penalty where it was applied.
                d_terms = {"train/d_adv": d_adv, **penalties}
                if isinstance(d_aux, Tensor):
                    d_terms["train/d_aux"] = d_aux
                if not self._applies(d_loss, "d_loss"):
                    return
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                opt_d.step()

        for _ in range(self.settings.g_steps):
            with self.toggled_optimizer(opt_g):
                z, y_fake = self.training_noise(reals[-1].shape[0])
                fake = run_generator(self.G, z, y_fake)
                g_fake, c_fake = self.discriminate(fake, y_fake)
                # A loss whose G reads D(x) (relativistic, rpgan) takes it on the last D update's
                # reals. R3GAN draws a separate batch for G (training/training_loop.py:287-290);
                # here that needs the loader to deliver one more chunk per iteration (train.py),
                # not done yet. No other loss reads reals in G's step.
                needs_real = self.loss.generator_needs_real
                g_real = self.discriminate(reals[-1], labels[-1])[0] if needs_real else None
                # ACGAN: G is also rewarded when D's classifier reads its fakes as the asked label.
                g_loss = self.loss.generator(g_fake, g_real) + self._aux_loss(c_fake, y_fake)
                if not self._applies(g_loss, "g_loss"):
                    return
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                opt_g.step()

        self.iteration += 1
        self.nan_guard.completed()
        self._update_ema()
        self._step_lr_decay()
        if self.iteration % self.settings.log_every == 0 or self.iteration == 1:
            metrics = {
                "train/d_loss": d_loss.detach(),
                # Of the last D update, like d_loss: d_adv, d_aux (ACGAN), gp, r1 (when applied).
                **{key: term.detach() for key, term in d_terms.items()},
                "train/g_loss": g_loss.detach(),
                **self.loss.d_outputs_logged(d_real, d_fake),  # probabilities or scores
                **self._grad_norms,
                **self.schedules.logged(self.iteration, self.trainer.optimizers),
            }
            self.log_iteration_metrics({k: float(v) for k, v in metrics.items()})
        if self.max_iters is not None and self.iteration >= self.max_iters:
            self.trainer.should_stop = True

    def _applies(self, loss: Tensor, name: str) -> bool:
        """Whether to apply the update of `loss`, as the NaN guard rules (it raises to stop)."""
        skipped = self.nan_guard.skipped
        try:
            return self.nan_guard.allows(loss, name, self.iteration + 1, self._on_all_ranks)
        finally:
            if self.nan_guard.skipped > skipped:  # logged even when this skip ends the run
                self.log_iteration_metrics({"train/skipped_updates": float(skipped + 1)})

    def _on_all_ranks(self, verdict: bool) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return verdict
        return trainer.strategy.reduce_boolean_decision(verdict, all=True)

    def _real_labels(self, batch: dict[str, Tensor], n: int) -> list[Tensor | None]:
        if self.n_classes is None:
            return [None] * n
        if "label" not in batch:
            raise ConfigError(
                f"model.conditional={self.conditional} needs labelled data, but the "
                "batches have no labels; use a labelled dataset (data.labels=true for "
                "data=image_folder) or model.conditional=none"
            )
        return list(batch["label"].chunk(n))

    def _aux_loss(self, class_logits: Tensor | None, y: Tensor | None) -> Tensor | float:
        if class_logits is None:
            return 0.0
        return self.settings.aux_weight * F.cross_entropy(class_logits, y)

    def _judge(
        self, real: Tensor, fake: Tensor, y: Tensor | None = None, y_fake: Tensor | None = None
    ) -> tuple[Judged, Judged, dict[str, Tensor]]:
        """D on one D update's reals and fakes, with the penalties of `regularizers.PENALTIES`
        due in this iteration (lazy intervals, the penalty schedule), on D as trained: with the
        labels and through DiffAugment (`regularizers.judge_with_penalties`)."""
        scale = self.schedules.penalty_scale(self.iteration)
        due = [(p, p.due(self.settings, self.iteration) * scale) for p in PENALTIES]
        due = [(p, factor) for p, factor in due if factor]
        return judge_with_penalties(self.discriminate, real, fake, y, y_fake, due, self.pack)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Runs after AMP has unscaled the gradients, so clipping and norms are in true units.
        is_g, s = optimizer is self.trainer.optimizers[0], self.settings
        net, max_norm = (self.G, s.grad_clip_g) if is_g else (self.D, s.grad_clip_d)
        norm = clip_or_measure(net, max_norm, s.log_grad_norm)
        if norm is not None:
            self._grad_norms[f"train/{'g' if is_g else 'd'}_grad_norm"] = norm.detach()

    def _update_ema(self) -> None:
        if self.G_ema is not None:
            ema.update(self.G_ema, self.G, self.schedules.ema_beta(self.iteration))

    # --- logging --------------------------------------------------------------------------------
    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Send metrics to every logger against the GAN iteration, not Lightning's global_step."""
        self.last_metrics.update(metrics)
        # The console shows them through ganforge.callbacks.progress, which reads last_metrics.
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.iteration)

    # --- optimizers and checkpoints ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        world = 1 if self._trainer is None else self.trainer.world_size
        self.schedules = Schedules.of(self.settings, world)  # optim.decay_images counts them all
        return optimizers.build(self.G, self.D, self.g_optimizer, self.d_optimizer, self.schedules)

    def _step_lr_decay(self) -> None:
        schedulers = self.lr_schedulers() if self.schedules.lr is not None else None
        optimizers.step(self.schedules, schedulers, self.trainer.optimizers, self.iteration)

    def configure_model(self) -> None:
        compile_system(self)  # system.compile: in place, so checkpoints keep eager's keys

    def on_train_end(self) -> None:
        self.compile_report.finish(self.iteration, self.last_metrics)

    def on_train_start(self) -> None:
        self.resume.restore_rng()  # now, after Lightning has built the loaders
        if self.max_iters is not None and self.iteration >= self.max_iters:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resume.save(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resume.load(self, checkpoint)
