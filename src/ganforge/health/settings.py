"""The health monitor's settings (`callbacks.health.*`): one typed record of plain values, checked
once, here.

`HealthSettings` is the one owner of each key's name, default and meaning: the rules' thresholds
are its fields inherited from `rules.Thresholds` (beside the rules that read them), the monitor's
own settings are added below. The config's `callbacks.health` node is its fields at their
defaults (`health_settings`, registered with the system's node by `ganforge.settings`), and
conf/callbacks/default.yaml sets only `_target_` and `dirpath`; `HealthMonitor(dirpath,
**settings)` takes them as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.errors import ConfigError, check_int
from ganforge.health.rules import STATES, Thresholds

ACTIONS = ("warn", "stop")
# every_n_iters and warmup_iters left at None: these, shrunk in a short run to give it at least
# MIN_PROBES probes and a warm-up of a tenth of it (HealthMonitor._scale_to).
DEFAULT_EVERY, DEFAULT_WARMUP, MIN_PROBES = 50, 200, 20


@dataclass(frozen=True)
class HealthSettings(Thresholds):
    # A probe (the only time the monitor does any work): grad norms, update ratios, one no-grad
    # D pass on real and fake. None: 50, or max_iters // 20 in a run shorter than 1,000
    # iterations (20 probes at least).
    every_n_iters: int | None = None
    # No diagnosis before this iteration (signals are still logged, and an episode starts where
    # its evidence started, warm-up included): a freshly initialised G is neither diverse nor
    # matched by D. None: 200, at most max_iters // 10.
    warmup_iters: int | None = None
    patience: int = 3  # consecutive probes a rule must hold to raise a state (or fail, to clear)
    probe_size: int = 64  # samples per side in the probe (rounded down to D's pack size)
    # What a raised state does, one setting per state of rules.STATES: warn, or stop: end the
    # run (last.ckpt saved; exit code 2 saying why).
    on_d_overpowering: str = "warn"
    on_vanishing_g_gradient: str = "warn"
    on_mode_collapse: str = "warn"
    on_divergence: str = "warn"
    on_stalled: str = "warn"

    def __post_init__(self) -> None:
        key = "callbacks.health."
        if self.every_n_iters is not None:
            check_int(key + "every_n_iters", self.every_n_iters)
        if self.warmup_iters is not None:
            check_int(key + "warmup_iters", self.warmup_iters, minimum=0)
        check_int(key + "patience", self.patience)
        check_int(key + "probe_size", self.probe_size, minimum=2)
        for state, action in self.on_state.items():
            if action not in ACTIONS:
                raise ConfigError(f"{key}on_{state}={action!r} must be one of {list(ACTIONS)}")
        super().__post_init__()  # the thresholds

    @property
    def on_state(self) -> dict[str, str]:
        """What each state does when raised (`warn` or `stop`), in `rules.STATES`' order."""
        return {state: getattr(self, f"on_{state}") for state in STATES}
