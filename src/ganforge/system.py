"""GANSystem: the LightningModule around a generator and a discriminator.

One `training_step` is one GAN iteration: `n_critic` discriminator updates, then one generator
update, with manual optimization so that each network's step only ever moves that network. The
iteration counter (G updates) is the x-axis of every log, the run length and every interval;
Lightning's `global_step` counts both optimizers' steps and is never shown to users.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.losses import GANLoss
from ganforge.regularizers import gradient_penalty, r1_penalty

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def describe_module(module: nn.Module) -> dict[str, Any]:
    """Class path and constructor arguments: enough to rebuild a ganforge model from a ckpt."""
    cls = type(module)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(module.init_args)}


class GANSystem(L.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        g_optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory,
        n_critic: int = 1,
        max_iters: int | None = None,
        ema_decay: float | None = 0.999,
        ema_start: int = 0,
        gp_weight: float = 0.0,
        r1_gamma: float = 0.0,
        r1_interval: int = 1,
        grad_clip_g: float | None = None,
        grad_clip_d: float | None = None,
        log_grad_norm: bool = False,
        log_every: int = 10,
        n_fixed: int = 64,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _check_positive(n_critic=n_critic, log_every=log_every, n_fixed=n_fixed)
        _check_positive(r1_interval=r1_interval)
        if max_iters is not None:
            _check_positive(max_iters=max_iters)
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"system.ema_decay={ema_decay} must be in (0, 1), or null to disable")
        # Modules and factories are not hyperparameters: pickling them into the checkpoint would
        # break weights_only loading. Their descriptions are saved in on_save_checkpoint instead.
        self.save_hyperparameters(
            ignore=["generator", "discriminator", "loss", "g_optimizer", "d_optimizer"]
        )
        self.automatic_optimization = False
        self.G, self.D, self.loss = generator, discriminator, loss
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.n_critic, self.max_iters = n_critic, max_iters
        self.G_ema: nn.Module | None = None
        if ema_decay is not None:
            self.G_ema = copy.deepcopy(generator).requires_grad_(False)
        self.iteration = 0  # GAN iterations = generator updates; saved in the checkpoint
        z = torch.randn(n_fixed, generator.z_dim, generator=torch.Generator().manual_seed(seed))
        # A persistent buffer: saved and restored with the weights, so grids stay comparable.
        self.register_buffer("fixed_z", z)
        self.last_metrics: dict[str, float] = {}
        self._grad_norms: dict[str, Tensor] = {}

    # --- sampling -----------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return self.G.z_dim

    def sample_z(self, n: int) -> Tensor:
        return torch.randn(n, self.z_dim, device=self.fixed_z.device)

    @torch.no_grad()
    def generate(self, z: Tensor, ema: bool = True) -> Tensor:
        """Samples in the data's range, from the EMA generator when there is one, in eval mode."""
        net = self.G_ema if ema and self.G_ema is not None else self.G
        was_training = net.training
        net.eval()
        try:
            return net(z.to(self.fixed_z.device))
        finally:
            net.train(was_training)

    # --- the GAN iteration -------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        reals = batch["x"].chunk(self.n_critic)
        for real in reals:
            with self.toggled_optimizer(opt_d):
                with torch.no_grad():
                    # D sees detached fakes: its step must not move G.
                    fake = self.G(self.sample_z(real.shape[0]))
                d_real, d_fake = self.D(real), self.D(fake)
                d_adv = self.loss.discriminator(d_real, d_fake)
                d_loss = d_adv + self._d_penalty(real, fake)
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                opt_d.step()

        with self.toggled_optimizer(opt_g):
            fake = self.G(self.sample_z(reals[-1].shape[0]))
            g_fake = self.D(fake)
            g_real = self.D(reals[-1]) if self.loss.generator_needs_real else None
            g_loss = self.loss.generator(g_fake, g_real)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()

        self.iteration += 1
        self._update_ema()
        if self.iteration % self.hparams.log_every == 0 or self.iteration == 1:
            metrics = {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                "train/d_real": self.loss.d_output(d_real),
                "train/d_fake": self.loss.d_output(d_fake),
                **self._grad_norms,
            }
            self.log_iteration_metrics({k: float(v) for k, v in metrics.items()})
        if self.max_iters is not None and self.iteration >= self.max_iters:
            self.trainer.should_stop = True

    def _d_penalty(self, real: Tensor, fake: Tensor) -> Tensor | float:
        penalty: Tensor | float = 0.0
        if self.hparams.gp_weight > 0:
            penalty = penalty + self.hparams.gp_weight * gradient_penalty(self.D, real, fake)
        interval = self.hparams.r1_interval
        if self.hparams.r1_gamma > 0 and self.iteration % interval == 0:
            # Lazy regularization (Karras et al. 2020): apply every `interval` iterations, scaled
            # up by the interval so the expected penalty is unchanged.
            penalty = penalty + 0.5 * self.hparams.r1_gamma * interval * r1_penalty(self.D, real)
        return penalty

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Runs after AMP has unscaled the gradients, so clipping and norms are in true units.
        is_g = optimizer is self.trainer.optimizers[0]
        params = [p for p in (self.G if is_g else self.D).parameters() if p.grad is not None]
        max_norm = self.hparams.grad_clip_g if is_g else self.hparams.grad_clip_d
        if max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        elif self.hparams.log_grad_norm:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        else:
            return
        self._grad_norms["train/g_grad_norm" if is_g else "train/d_grad_norm"] = norm.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        # Before ema_start the average just follows G, so early, poor weights don't linger in it.
        decay = self.hparams.ema_decay if self.iteration > self.hparams.ema_start else 0.0
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        # BatchNorm statistics are not averaged: the EMA generator uses G's current ones.
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # --- logging --------------------------------------------------------------------------------
    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Send metrics to every logger against the GAN iteration, not Lightning's global_step."""
        self.last_metrics.update(metrics)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.iteration)
        short = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("train/")}
        self.log_dict(short, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    # --- optimizers and checkpoints ---------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.g_optimizer(self.G.parameters()), self.d_optimizer(self.D.parameters())]

    def on_train_start(self) -> None:
        if self.max_iters is not None and self.iteration >= self.max_iters:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ganforge"] = {
            "iteration": self.iteration,
            "generator": describe_module(self.G),
            "discriminator": describe_module(self.D),
            "loss": self.loss.name,
            "has_ema": self.G_ema is not None,
            "meta": self.hparams.meta or {},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.iteration = int(checkpoint.get("ganforge", {}).get("iteration", 0))


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"system.{key}={value} must be a positive integer")
