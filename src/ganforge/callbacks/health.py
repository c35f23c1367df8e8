"""Training health: notice while a run goes on that it is failing, say which way, with numbers.

Every `every_n_iters` GAN iterations (a *probe* iteration) the monitor gathers:

* from the step itself, through the `on_before_optimizer_step` hook (called under manual
  optimization too, after AMP unscaling): G's and D's gradient norms, and copies of the weights,
  from which the update-to-weight ratio ||dW|| / ||W|| of each network's step follows at the end
  of the iteration;
* from what GANSystem already logs (`pl_module.last_metrics`): `train/d_loss` and `train/g_loss`;
  with periodic evaluation, `val/fid` / `val/recall`, or on 2-D data `val/modes_captured`;
* from **the one extra pass** the monitor makes, once per probe iteration: a no-grad D forward on
  (up to `probe_size` of) the current real batch and on G's samples of a fixed noise batch — D's
  accuracy on real and on fake, D's mean output on fakes, and the diversity of the fakes (their
  mean pairwise distance in pixel space, relative to the same statistic of real data, measured
  once at the start). The probe forks the RNGs and restores every buffer (BatchNorm statistics,
  spectral-norm vectors): training with the monitor is the same run as training without it.

After `warmup_iters`, the rules of `ganforge.health.rules` turn each probe into states raised or
cleared. A raised state prints one warning (state, iteration, evidence, remedies, README link),
sends a W&B alert when a W&B logger is active, and is written to `<dirpath>/health.json`; with
`on_<state>: stop` the run stops after that iteration: last.ckpt is saved as at any end, and the
run then fails with `HealthStop` (exit code 2 from the console commands) saying why. Signals are
logged as `health/*` against GAN iterations; `<dirpath>/plots/health.png` shows the timeline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from ganforge.callbacks.evaluation import PeriodicEvaluation
from ganforge.callbacks.images import save_and_log_image
from ganforge.data.base import to_float
from ganforge.health import actions, signals
from ganforge.health.actions import HealthStop
from ganforge.health.rules import MODE_COUNTS, Diagnoser, Event
from ganforge.health.settings import DEFAULT_EVERY, DEFAULT_WARMUP, MIN_PROBES, HealthSettings
from ganforge.models.protocols import run_generator

log = logging.getLogger("ganforge")
# Periodic-evaluation metrics the rules read (as logged: `val/<name>`): FID, recall and every
# mode count the metric registry knows.
EVAL_KEYS = ("fid", "recall", *MODE_COUNTS)

__all__ = ["HealthMonitor", "HealthStop"]


class HealthMonitor(L.Callback):
    def __init__(self, dirpath: str, **settings: Any) -> None:
        """`dirpath`: the run directory (`health.json` there, `plots/health.png` below it); the
        settings as keywords: the fields of `ganforge.health.settings.HealthSettings` (probe
        interval, warm-up, patience, probe size, the rules' thresholds, `on_<state>` actions),
        e.g. `HealthMonitor(dirpath, every_n_iters=1, on_mode_collapse="stop")`."""
        self.settings = s = HealthSettings(**settings)
        self.dirpath = Path(dirpath)
        self.every_n_iters = s.every_n_iters or DEFAULT_EVERY  # until the run's length is known
        self.warmup_iters = DEFAULT_WARMUP if s.warmup_iters is None else s.warmup_iters
        self.diagnoser: Diagnoser | None = None
        self.episodes: list[dict[str, Any]] = []
        self.history: list[tuple[int, dict[str, float]]] = []
        self.stop_event: Event | None = None
        self.real_distance: float | None = None
        self._step: dict[str, Any] = {}  # this probe iteration's gradient norms and weight copies
        self._last_probe = -1
        self._eval_every: int | None = None
        self._diagnoser_state: dict[str, Any] | None = None

    @property
    def json_path(self) -> Path:
        return self.dirpath / "health.json"

    @property
    def plot_path(self) -> Path:
        return self.dirpath / "plots" / "health.png"

    def _off(self, trainer: L.Trainer) -> bool:
        # fast_dev_run writes nothing (one iteration proves the wiring, not the health).
        return bool(trainer.fast_dev_run) or trainer.sanity_checking

    # --- setup --------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._off(trainer):
            return
        self._scale_to(getattr(pl_module, "max_iters", None))
        self.diagnoser = Diagnoser(self.settings, self.settings.patience, pl_module.loss)
        if self._diagnoser_state is not None:  # resumed: continue the references and tracks
            self.diagnoser.load_state_dict(self._diagnoser_state)
            self._diagnoser_state = None
        evaluation = next((c for c in trainer.callbacks if isinstance(c, PeriodicEvaluation)), None)
        self._eval_every = evaluation.every_n_iters if evaluation is not None else None
        if trainer.is_global_zero:
            # Written now (and at every change): an unwritable run directory fails before
            # iteration 1, and a run that crashes still leaves its health record.
            actions.write_json(self.json_path, self.episodes)
        datamodule = trainer.datamodule
        if self.real_distance is None and hasattr(datamodule, "real_samples"):
            # The real statistic, once: a fixed sample of the training data (seeded), so every
            # probe divides by the same number. (Without a ganforge datamodule, the first probe's
            # real batch serves.)
            real = datamodule.real_samples(self._n(pl_module, 256), seed=0)
            real = to_float(real) if real.dtype == torch.uint8 else real
            self.real_distance = signals.mean_pairwise_distance(real)

    def _scale_to(self, max_iters: int | None) -> None:
        """Settings left at null follow the run's length, so a short run is diagnosed too: at
        least MIN_PROBES probes and a warm-up of at most a tenth of the run (patience counts
        probes, so it shrinks with them). 300 iterations: a probe every 15, warm-up 30, a state
        raised from iteration 60 at the earliest. Values set explicitly are kept."""
        every, warmup = self.settings.every_n_iters, self.settings.warmup_iters
        if not max_iters:
            return
        if every is None:
            self.every_n_iters = max(1, min(DEFAULT_EVERY, max_iters // MIN_PROBES))
        if warmup is None:
            self.warmup_iters = min(DEFAULT_WARMUP, max_iters // 10)
        if (self.every_n_iters, self.warmup_iters) != (DEFAULT_EVERY, DEFAULT_WARMUP):
            log.info(
                "training health: a probe every %d iterations, diagnosis from iteration %d",
                self.every_n_iters,
                self.warmup_iters,
            )

    def _n(self, pl_module: Any, n: int) -> int:
        pack = getattr(pl_module, "pack", 1)
        return max(pack, n // pack * pack)

    # --- gathering ----------------------------------------------------------------------------
    def _probing(self, iteration: int) -> bool:
        # Also the first iteration (of a fresh run): the references of `divergence`.
        if self.diagnoser is None:
            return False
        return iteration % self.every_n_iters == 0 or not self.diagnoser.has_reference

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer) -> None:
        # The iteration counter moves after G's step: this step belongs to iteration + 1.
        if not self._probing(pl_module.iteration + 1):
            return
        is_g = optimizer is trainer.optimizers[0]
        net = pl_module.G if is_g else pl_module.D
        params = [p for p in net.parameters() if p.requires_grad]
        name = "g" if is_g else "d"
        # With n_critic > 1, D's last step of the iteration is the one measured.
        self._step[f"{name}_grad_norm"] = signals.grad_norm(params)
        self._step[f"{name}_before"] = signals.snapshot(params)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Here every callback of the previous iteration, a periodic evaluation included, has
        # logged its values, whatever the callback order.
        it = pl_module.iteration
        if self.diagnoser is None or self._eval_every is None or it == 0:
            return
        if it % self._eval_every == 0:
            self._add_evaluation(trainer, pl_module)

    def _add_evaluation(self, trainer: L.Trainer, pl_module: Any) -> None:
        assert self.diagnoser is not None
        metrics = {k: float(pl_module.last_metrics[f"val/{k}"]) for k in EVAL_KEYS
                   if f"val/{k}" in pl_module.last_metrics}  # fmt: skip
        if not metrics:
            return
        n_modes = getattr(trainer.datamodule, "n_modes", None)
        if n_modes is not None:
            metrics["n_modes"] = float(n_modes)
        self.diagnoser.add_evaluation(pl_module.iteration, metrics)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration
        if not self._probing(it) or it == self._last_probe:
            return  # (an iteration skipped by nan_policy=skip does not move the counter)
        self._last_probe = it
        s = self._measure(pl_module, batch)
        self._step = {}
        pl_module.log_iteration_metrics({f"health/{k}": v for k, v in s.items()})
        self.history.append((it, s))
        assert self.diagnoser is not None
        self.diagnoser.observe(s)
        # During the warm-up the rules only note where their evidence starts.
        for event in self.diagnoser.check(it, s, diagnose=it >= self.warmup_iters):
            self._act(trainer, pl_module, event)
        if trainer.world_size > 1:
            # Rank 0 alone sees the evaluation metrics: its decision to stop is everyone's.
            stop = trainer.strategy.broadcast(self.stop_event is not None, src=0)
            trainer.should_stop = trainer.should_stop or stop
        elif self.stop_event is not None:
            trainer.should_stop = True

    def _measure(self, pl_module: Any, batch: dict[str, Tensor]) -> dict[str, float]:
        s: dict[str, float] = {}
        for name, net in (("g", pl_module.G), ("d", pl_module.D)):
            if f"{name}_before" in self._step:
                s[f"{name}_grad_norm"] = self._step[f"{name}_grad_norm"]
                params = [p for p in net.parameters() if p.requires_grad]
                before = self._step[f"{name}_before"]
                s[f"{name}_update_ratio"] = signals.update_ratio(before, params)
        for key in ("d_loss", "g_loss"):
            if f"train/{key}" in pl_module.last_metrics:
                s[key] = float(pl_module.last_metrics[f"train/{key}"])
        s |= self._probe(pl_module, batch)
        return s

    def _probe(self, pl_module: Any, batch: dict[str, Tensor]) -> dict[str, float]:
        """The one extra pass: D on real and on fixed-noise fakes, no grad, no side effects."""
        n = self._n(pl_module, min(self.settings.probe_size, batch["x"].shape[0]))
        if n > batch["x"].shape[0]:
            return {}
        real = batch["x"][:n]
        y_real = batch["label"][:n] if pl_module.n_classes is not None else None
        g = torch.Generator().manual_seed(0)
        z = torch.randn(n, pl_module.z_dim, generator=g).to(real.device)
        y_fake = pl_module.sample_y(n, generator=g)
        with signals.side_effect_free(pl_module.G, pl_module.D):
            # G and D called as in training (run_generator; GANSystem.discriminate with ACGAN
            # heads and DiffAugment): the probe sees exactly what the losses see.
            fake = run_generator(pl_module.G, z, y_fake)
            real_logits = pl_module.discriminate(real, y_real)[0]
            fake_logits = pl_module.discriminate(fake, y_fake)[0]
        if self.real_distance is None:
            self.real_distance = signals.mean_pairwise_distance(real)
        acc_real, acc_fake = signals.d_accuracy(real_logits, fake_logits, pl_module.loss)
        fake_distance = signals.mean_pairwise_distance(fake)
        d_real = float(pl_module.loss.d_output(real_logits))
        d_fake = float(pl_module.loss.d_output(fake_logits))
        return {
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
            "d_gap": d_real - d_fake,
            "d_fake": d_fake,
            "fake_distance": fake_distance,
            "real_distance": self.real_distance,
            "diversity": fake_distance / max(self.real_distance, 1e-12),
        }

    # --- acting -------------------------------------------------------------------------------
    def _act(self, trainer: L.Trainer, pl_module: Any, event: Event) -> None:
        action = self.settings.on_state[event.state]
        if event.cleared:
            for ep in reversed(self.episodes):
                if ep["state"] == event.state and ep["end"] is None:
                    ep["end"] = event.since
                    ep["end_evidence"] = {k: actions._finite(v) for k, v in event.evidence.items()}
                    break
        else:
            self.episodes.append(actions.episode(event, action))
            # Rank 0's diagnosis decides (it alone sees the evaluation metrics); the other ranks
            # stop with it through the broadcast in on_train_batch_end.
            if action == "stop" and self.stop_event is None and trainer.is_global_zero:
                self.stop_event = event
        if not trainer.is_global_zero:
            return
        text = actions.message(event)
        if event.cleared:
            log.info(text)
        else:
            stopping = f" — stopping the run (on_{event.state}=stop)" if action == "stop" else ""
            log.warning(text + stopping)
        actions.alert(trainer.loggers, event)
        actions.write_json(self.json_path, self.episodes)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._off(trainer) or not trainer.is_global_zero or self.diagnoser is None:
            return
        actions.write_json(self.json_path, self.episodes)

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._off(trainer) or not trainer.is_global_zero or not self.history:
            return
        image = actions.timeline_image(
            self.history, self.episodes, pl_module.iteration, self.warmup_iters
        )
        save_and_log_image(image, self.plot_path, "plots/health", pl_module.iteration,
                           trainer.loggers)  # fmt: skip

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # The last hook of a fit, after every callback's on_train_end (last.ckpt, the final
        # evaluation) and on_fit_end (plots): the run is complete on disk, and only now fails.
        if self.stop_event is None:
            return
        event, self.stop_event = self.stop_event, None
        raise HealthStop(
            f"callbacks.health.on_{event.state}=stop: {event.state} from iteration "
            f"{event.since} ({actions.format_evidence(event.evidence)}); stopped after "
            f"iteration {pl_module.iteration}. The run's files are complete (checkpoints/"
            f"last.ckpt, {self.json_path.name}, plots/health.png). Try: "
            f"{actions.REMEDIES[event.state]} (see {actions.anchor(event.state)}); or set "
            f"callbacks.health.on_{event.state}=warn to train on"
        )

    # --- checkpointing --------------------------------------------------------------------------
    # Primitives only, so checkpoints still load with weights_only=True.
    def state_dict(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "history": [[it, s] for it, s in self.history],
            "real_distance": self.real_distance,
            "diagnoser": self.diagnoser.state_dict() if self.diagnoser is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.episodes = list(state_dict.get("episodes", []))
        self.history = [(int(it), dict(s)) for it, s in state_dict.get("history", [])]
        self.real_distance = state_dict.get("real_distance")
        self._diagnoser_state = state_dict.get("diagnoser")
