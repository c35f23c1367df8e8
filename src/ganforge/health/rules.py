"""The diagnoses: five named states, each a documented rule over the signals, with hysteresis.

A state is *raised* when its rule has held at `patience` consecutive checks (one check per probe,
every `every_n_iters` GAN iterations, after `warmup_iters`), and *cleared* when it has failed at
`patience` consecutive checks; while a state is active its rule is judged with looser thresholds
(`Thresholds.relax`), so a signal hovering at a threshold raises it once, not on every probe.

The rules (the README's Troubleshooting section explains each and its remedies):

* `d_overpowering` — D classifies both real and fake samples correctly at least `d_accuracy` of
  the time, and confidently: its mean output on real minus on fake samples (probabilities for the
  logit losses) is at least `d_gap` — D(x) -> 1, D(G(z)) -> 0: D has won. (Accuracy alone is
  not enough: the default DCGAN on MNIST is healthy with D right on ~100 % for hundreds of
  iterations, but not that sure of itself.) With `d_g_grad_drop` < 1, G's gradient norm must
  also have shrunk to that fraction of the largest seen so far. That is off by default (1.0):
  under the non-saturating loss G's gradient *grows* while D wins (measured: 6 -> 13 with D at
  100 % on MNIST, 2 -> 35 on the ring), so the shrink only shows with the saturating loss,
  where `vanishing_g_gradient` names it.
* `vanishing_g_gradient` — a saturating G loss (its record says so: `loss=minimax`) with D's
  mean output on fakes, D(G(z)), at most `vanishing_d_fake`: G's loss gradient, proportional
  to D(G(z)), has vanished.
* `mode_collapse` — the generated batch's mean pairwise distance (fixed noise) is at most
  `collapse_diversity` of the real data's; or, with periodic evaluation, a mode count (every
  registry metric that has one: 2-D mixtures' `val/modes_captured`, Stacked MNIST's
  `val/modes`) fell to `collapse_modes` of the best seen, or `val/recall` to `collapse_recall`
  of its best.
* `divergence` — a loss magnitude or gradient norm is `divergence_factor` times its reference
  (its value at the first probe, iteration 1 of a fresh run, but at least 1 for a loss), or a
  signal is not finite.
* `stalled` — G's update-to-weight ratio is at most `stall_update_ratio` (G does not move); or,
  with periodic evaluation, the evaluation metric (`val/fid`, or a mode count —
  `val/modes_captured`, `val/modes` — while modes are missing) has not improved by
  `stall_min_delta` for `stall_evals` evaluations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ganforge.errors import ConfigError, check_int, check_positive
from ganforge.losses import GANLoss
from ganforge.metrics.registry import mode_count_keys

# Evaluation keys (without `val/`) that count captured modes, as the metric registry names them.
MODE_COUNTS = tuple(k.removeprefix("val/") for k in mode_count_keys())
# In the order of explanation: a state earlier here can cause a later one, never the reverse.
STATES = ("divergence", "stalled", "d_overpowering", "vanishing_g_gradient", "mode_collapse")
# What each state explains when they fire together: a diverged run breaks every signal; a G that
# does not move (stalled) lets D win and keeps its sample collapsed; a D that wins (D(G(z)) -> 0)
# is what starves a saturating G's gradient.
EXPLAINS = {
    "divergence": ("stalled", "d_overpowering", "vanishing_g_gradient", "mode_collapse"),
    "stalled": ("d_overpowering", "vanishing_g_gradient", "mode_collapse"),
    "d_overpowering": ("vanishing_g_gradient",),
}
# The magnitudes `divergence` watches, and the floor of each reference: a loss that starts near
# 0 (a critic's) or a gradient that starts tiny (an untrained D barely depends on its input) is
# measured against 1, not against its own first value. Healthy runs here moved G's gradient norm
# 200x from iteration 1 (0.2 -> 38 on the ring), never 1000x past 1.
DIVERGENCE_SIGNALS = {"d_loss": 1.0, "g_loss": 1.0, "d_grad_norm": 1.0, "g_grad_norm": 1.0}


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds (`callbacks.health.<name>`: the fields of
    `ganforge.health.settings.HealthSettings`, which adds the monitor's own settings)."""

    d_accuracy: float = 0.95  # d_overpowering: D right on >= this share of real AND of fake,
    d_gap: float = 0.9  # and sure of it: mean D(x) - mean D(G(z)) >= this,
    d_g_grad_drop: float = 1.0  # and G's grad norm <= this x its largest so far (1.0: not required)
    vanishing_d_fake: float = 0.05  # vanishing_g_gradient: a saturating loss and D(G(z)) <= this
    # mode_collapse: fakes' mean pairwise distance <= this x the real one,
    collapse_diversity: float = 0.2
    collapse_modes: float = 0.5  # or (evaluated) a mode count <= this x the best so far,
    collapse_recall: float = 0.5  # or (images, evaluated) val/recall <= this x the best so far
    # divergence: a loss or grad norm >= this x its iteration-1 value (floored at 1)
    divergence_factor: float = 1000.0
    stall_update_ratio: float = 1e-8  # stalled: G's ||dW|| / ||W|| <= this (G does not move),
    # or val/fid (2-D: modes, while some are missing) not improved for this many evaluations
    stall_evals: int = 3
    stall_min_delta: float = 0.01  # the relative change that counts as an improvement
    # While a state is active, its thresholds move this fraction of the way towards "healthy"
    # (e.g. accuracy 0.95 -> clears below 0.95 - 0.1 * 0.95 ~ 0.86 with relax 0.1).
    relax: float = 0.1

    def __post_init__(self) -> None:
        key = "callbacks.health."
        fractions = ("d_accuracy", "d_gap", "d_g_grad_drop", "vanishing_d_fake",
                     "collapse_diversity", "collapse_modes", "collapse_recall")  # fmt: skip
        for name in fractions:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"{key}{name}={value!r} must be a number in (0, 1]")
        check_positive(key + "divergence_factor", self.divergence_factor)
        if self.divergence_factor <= 1:
            raise ConfigError(f"{key}divergence_factor={self.divergence_factor} must be > 1")
        check_int(key + "stall_evals", self.stall_evals)
        for name in ("stall_update_ratio", "stall_min_delta"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise ConfigError(f"{key}{name}={getattr(self, name)!r} must be a number >= 0")
        if not 0 <= self.relax < 1:
            raise ConfigError(f"{key}relax={self.relax!r} must be in [0, 1)")


@dataclass
class Event:
    """A state raised (`cleared` False) or cleared at `iteration`, with its evidence."""

    state: str
    iteration: int
    since: int  # raised: the first probe of the evidence (warm-up included); cleared: of the streak
    cleared: bool
    evidence: dict[str, float]
    follows: str | None = None  # raised: the active (or holding) state that explains this one
    explains: list[str] = field(default_factory=list)  # raised: active states this one explains


@dataclass
class _Track:
    active: bool = False
    streak: int = 0  # consecutive checks that disagree with `active`
    since: int = 0
    held_since: int | None = None  # first probe of the rule's current run of holding, or None


class Diagnoser:
    """Turns probes (and evaluations) into raise/clear events. Pure bookkeeping: no I/O."""

    def __init__(self, thresholds: Thresholds, patience: int, loss: GANLoss) -> None:
        check_int("callbacks.health.patience", patience)
        self.t, self.patience = thresholds, patience
        self.saturating = loss.saturating
        self.tracks = {s: _Track() for s in STATES}
        self.max_g_grad = 0.0
        self.first: dict[str, float] = {}
        self._referenced = False
        # Evaluation history, newest last: (iteration, metrics).
        self.evals: list[tuple[int, dict[str, float]]] = []

    # --- references ----------------------------------------------------------------------------
    def reference(self, key: str) -> float | None:
        """The scale `divergence` measures `key` against: its value at the first probe (a fresh
        run's iteration 1, before training has moved anything much), at least its floor."""
        value = self.first.get(key)
        return None if value is None else max(value, DIVERGENCE_SIGNALS[key])

    @property
    def has_reference(self) -> bool:
        return self._referenced

    def observe(self, s: dict[str, float]) -> None:
        """Take in a probe's signals (every probe, warm-up included): the references."""
        if math.isfinite(s.get("g_grad_norm", math.nan)):
            self.max_g_grad = max(self.max_g_grad, s["g_grad_norm"])
        if not self._referenced:
            self._referenced = True
            self.first = {
                k: abs(s[k]) for k in DIVERGENCE_SIGNALS if math.isfinite(s.get(k, math.nan))
            }

    def _relaxed(self, value: float, active: bool, healthy_above: bool) -> float:
        """The threshold `value`, moved by `relax` towards the healthy side (above it, or below)
        while the state is active: the hysteresis."""
        if not active:
            return value
        return value * (1 + self.t.relax) if healthy_above else value * (1 - self.t.relax)

    # --- the rules: each returns its evidence when it holds, else None -------------------------
    def d_overpowering(self, s: dict[str, float], active: bool) -> dict[str, float] | None:
        if not {"d_acc_real", "d_acc_fake", "d_gap", "g_grad_norm"} <= s.keys():
            return None
        acc = min(s["d_acc_real"], s["d_acc_fake"])
        drop = s["g_grad_norm"] / self.max_g_grad if self.max_g_grad else 1.0
        # Healthy is lower accuracy and gap (relaxed down) and a larger gradient (relaxed up).
        if (
            acc >= self._relaxed(self.t.d_accuracy, active, False)
            and s["d_gap"] >= self._relaxed(self.t.d_gap, active, False)
            and drop <= self._relaxed(self.t.d_g_grad_drop, active, True)
        ):
            return {"d_acc_real": s["d_acc_real"], "d_acc_fake": s["d_acc_fake"],
                    "d_gap": s["d_gap"], "g_grad_norm": s["g_grad_norm"],
                    "g_grad_max": self.max_g_grad}  # fmt: skip
        return None

    def vanishing_g_gradient(self, s: dict[str, float], active: bool) -> dict[str, float] | None:
        if not self.saturating or "d_fake" not in s:
            return None
        if s["d_fake"] <= self._relaxed(self.t.vanishing_d_fake, active, True):
            ev = {"d_fake": s["d_fake"]}
            if "g_grad_norm" in s and self.max_g_grad:
                ev |= {"g_grad_norm": s["g_grad_norm"], "g_grad_max": self.max_g_grad}
            return ev
        return None

    def mode_collapse(self, s: dict[str, float], active: bool) -> dict[str, float] | None:
        ev: dict[str, float] = {}
        limit = self._relaxed(self.t.collapse_diversity, active, True)
        if "diversity" in s and s["diversity"] <= limit:
            ev |= {"diversity": s["diversity"], "fake_distance": s["fake_distance"],
                   "real_distance": s["real_distance"]}  # fmt: skip
        # Every metric that counts modes (registry.mode_count_keys: 2-D mixtures, Stacked MNIST).
        watched = [(key, self.t.collapse_modes) for key in MODE_COUNTS]
        for key, fraction in [*watched, ("recall", self.t.collapse_recall)]:
            best, last = self._best_and_last(key, higher_is_better=True)
            if best is not None and best > 0 and last <= fraction * best:
                ev |= {key: last, f"best_{key}": best}
        return ev or None

    def divergence(self, s: dict[str, float], active: bool) -> dict[str, float] | None:
        factor = self._relaxed(self.t.divergence_factor, active, False)
        ev: dict[str, float] = {}
        for key in DIVERGENCE_SIGNALS:
            if key not in s:
                continue
            ref = self.reference(key)
            if not math.isfinite(s[key]):
                ev |= {key: s[key]}
            elif ref is not None and abs(s[key]) >= factor * ref:
                ev |= {key: s[key], f"{key}_reference": ref, f"{key}_factor": abs(s[key]) / ref}
        return ev or None

    def stalled(self, s: dict[str, float], active: bool) -> dict[str, float] | None:
        ev: dict[str, float] = {}
        if "g_update_ratio" in s and s["g_update_ratio"] <= self.t.stall_update_ratio:
            ev["g_update_ratio"] = s["g_update_ratio"]
        stale = self._evals_without_improvement()
        if stale is not None:
            key, n, best = stale
            ev |= {key: self.evals[-1][1][key], f"best_{key}": best, "evals_without_improvement": n}
        return ev or None

    # --- evaluation history ----------------------------------------------------------------------
    def add_evaluation(self, iteration: int, metrics: dict[str, float]) -> None:
        if self.evals and self.evals[-1][0] == iteration:
            return
        self.evals.append((iteration, metrics))

    def _best_and_last(self, key: str, higher_is_better: bool) -> tuple[float | None, float]:
        values = [m[key] for _, m in self.evals if key in m and math.isfinite(m[key])]
        if len(values) < 2:
            return None, math.nan
        return (max(values) if higher_is_better else min(values)), values[-1]

    def _evals_without_improvement(self) -> tuple[str, int, float] | None:
        """(metric, evaluations since its last improvement, best) once that count reaches
        `stall_evals`; None otherwise, or when the metric is at its optimum (every 2-D mode
        captured: an evaluation there counts as an improvement)."""
        if not self.evals:
            return None
        last = self.evals[-1][1]
        if "fid" in last:
            key, sign = "fid", -1.0
        else:
            counted = [k for k in MODE_COUNTS if k in last]
            if not counted or last[counted[0]] >= last.get("n_modes", 0):
                return None
            key, sign = counted[0], 1.0
        best, since = -math.inf, 0
        for _, m in self.evals:
            value = sign * m.get(key, math.nan)
            if not math.isfinite(value):
                continue
            # An improvement counts when it beats the best by stall_min_delta (relative).
            margin = self.t.stall_min_delta * abs(best) if math.isfinite(best) else 0.0
            if value > best + margin or m.get("n_modes", math.inf) <= value:
                best, since = max(best, value), 0
            else:
                since += 1
        if since >= self.t.stall_evals:
            return key, since, sign * best
        return None

    # --- one check -------------------------------------------------------------------------------
    def check(
        self, iteration: int, signals: dict[str, float], diagnose: bool = True
    ) -> list[Event]:
        """Judge every rule on this probe's signals (already `observe`d); return the states
        raised or cleared. `diagnose=False` (the warm-up) only notes where evidence starts: an
        episode raised later starts there."""
        events = []
        for state in STATES:
            track = self.tracks[state]
            evidence = getattr(self, state)(signals, track.active)
            holds = evidence is not None
            if not holds:
                track.held_since = None
            elif track.held_since is None:
                track.held_since = iteration
            if not diagnose:
                continue
            if holds == track.active:
                track.streak = 0
                continue
            if track.streak == 0:
                track.since = iteration
            track.streak += 1
            if track.streak < self.patience:
                continue
            track.active, track.streak = holds, 0
            ev = evidence if holds else {k: v for k, v in signals.items() if k in _SHOWN[state]}
            since = track.held_since if holds and track.held_since is not None else track.since
            events.append(Event(state, iteration, since, not holds, dict(ev or {})))
        for event in events:
            if not event.cleared:
                self._relate(event)
        return events

    def _relate(self, event: Event) -> None:
        """Name the cause: a raised state follows from the first state (in `STATES`' order) that
        explains it and is active or holding now; it explains the active states it can cause."""
        causes = [c for c in STATES if event.state in EXPLAINS.get(c, ())]
        event.follows = next(
            (c for c in causes if self.tracks[c].active or self.tracks[c].held_since is not None),
            None,
        )
        event.explains = [e for e in EXPLAINS.get(event.state, ()) if self.tracks[e].active]

    def active(self) -> list[str]:
        return [s for s, t in self.tracks.items() if t.active]

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "tracks": {s: asdict(t) for s, t in self.tracks.items()},
            "max_g_grad": self.max_g_grad,
            "first": self.first,
            "referenced": self._referenced,
            "evals": [[it, m] for it, m in self.evals],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracks = {s: _Track(**state["tracks"][s]) for s in STATES if s in state["tracks"]}
        self.tracks |= {s: _Track() for s in STATES if s not in self.tracks}
        self.max_g_grad = float(state["max_g_grad"])
        self.first = {k: float(v) for k, v in state["first"].items()}
        self._referenced = bool(state["referenced"])
        self.evals = [(int(it), dict(m)) for it, m in state["evals"]]


# What a cleared state shows as the evidence that it is over: the signals its rule reads.
_SHOWN = {
    "d_overpowering": ("d_acc_real", "d_acc_fake", "d_gap", "g_grad_norm"),
    "vanishing_g_gradient": ("d_fake", "g_grad_norm"),
    "mode_collapse": ("diversity",),
    "divergence": tuple(DIVERGENCE_SIGNALS),
    "stalled": ("g_update_ratio",),
}
