"""What the health monitor does about a state: the console line, the W&B alert, `health.json`,
the `plots/health.png` timeline and the error that ends a run stopped on purpose."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure

from ganforge.errors import GanforgeError
from ganforge.figures import figure_image
from ganforge.health.rules import STATES, Event
from ganforge.metrics.files import atomic_write_bytes

log = logging.getLogger("ganforge")

# One line of remedies per state, the README's in short; the anchor leads to the full text.
REMEDIES = {
    "d_overpowering": "weaken D: lower optim.lr_d, a smaller D (model.base_width / model.d_width "
    "/ model.hidden), model.dropout=0.3 (MLP), system.r1_gamma=1-10, or DiffAugment on small data",
    "vanishing_g_gradient": "use the non-saturating loss (loss=non_saturating, the default) or a "
    "loss with useful gradients everywhere (loss=hinge, loss=wgan_gp); a weaker D helps too",
    "mode_collapse": "PacGAN packing (model.pack=2 or 4), loss=wgan_gp or system.r1_gamma=1-10, a "
    "slower G (optim.lr_g at half optim.lr_d), model.spectral_norm=true; on 2-D toys "
    "system.ema_decay=null",
    "divergence": "lower both learning rates (optim.lr_d=1e-4 optim.lr_g=1e-4), clip "
    "(system.grad_clip_d=10 system.grad_clip_g=10), add a penalty (system.r1_gamma=10), "
    "trainer.precision=32-true",
    "stalled": "check that G learns (optim.lr_g > 0, G's parameters trainable); if it does, the "
    "run may be done: keep its best checkpoint (checkpoints/best_<metric>.ckpt, e.g. best_fid), "
    "or raise the learning rates / lower "
    "system.n_critic",
}
COLORS = {
    "d_overpowering": "tab:red",
    "vanishing_g_gradient": "tab:orange",
    "mode_collapse": "tab:purple",
    "divergence": "black",
    "stalled": "tab:gray",
}


def anchor(state: str) -> str:
    """The README anchor of a state's entry (an explicit `<a id>`: stable under heading edits)."""
    return f"README.md#health-{state.replace('_', '-')}"


class HealthStop(GanforgeError, RuntimeError):
    """A run stopped by `callbacks.health.on_<state>=stop`: the state and the evidence say why;
    last.ckpt holds the state at the stop."""


def format_evidence(evidence: dict[str, float]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in evidence.items())


def _num(v: float) -> str:
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) < 1e6):
        return str(int(v))
    return f"{v:.3g}"


def message(event: Event) -> str:
    if event.cleared:
        return (
            f"training health: {event.state} cleared at iteration {event.iteration} (since "
            f"{event.since}): {format_evidence(event.evidence)}"
        )
    head = (
        f"training health: {event.state} from iteration {event.since} (raised at {event.iteration})"
    )
    if event.follows:
        # An effect: its own remedies would treat a symptom; the cause's message has the fix.
        return (
            f"{head}, following from {event.follows} (the cause; see its message): "
            f"{format_evidence(event.evidence)}"
        )
    explains = f", the cause of {' and '.join(event.explains)}" if event.explains else ""
    return (
        f"{head}{explains}: {format_evidence(event.evidence)}. Try: {REMEDIES[event.state]} "
        f"(see {anchor(event.state)})"
    )


def alert(loggers: list[Logger], event: Event) -> None:
    """A W&B alert (Slack / e-mail, as the user set up in W&B) for each active W&B logger."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        what = "cleared" if event.cleared else "raised"
        try:
            logger.experiment.alert(
                title=f"ganforge: {event.state} {what}"[:63],
                text=message(event),
                level="INFO" if event.cleared else "WARN",
            )
        except Exception as err:  # an alert is a courtesy: a W&B hiccup must not end training
            log.warning("training health: the W&B alert failed (%s); training goes on", err)


def write_json(path: Path, episodes: list[dict[str, Any]]) -> None:
    """`health.json`: every episode, rewritten (atomically) at each change and at the end, so a
    run that crashes still leaves what was seen."""
    text = json.dumps(episodes, indent=2, default=_json_float) + "\n"
    atomic_write_bytes(path, text.encode())


def _json_float(value: Any) -> Any:
    return float(value)


def episode(event: Event, action: str) -> dict[str, Any]:
    """A new episode: state, start (first iteration of the streak that raised it), raised_at,
    end (null while active), evidence (numbers at the raise), end_evidence, action."""
    return {
        "state": event.state,
        "start": event.since,
        "raised_at": event.iteration,
        "end": None,
        "evidence": {k: _finite(v) for k, v in event.evidence.items()},
        "end_evidence": None,
        "action": action,
        "follows": event.follows,  # the state that explains this one, or null: a cause
        "remedies": REMEDIES[event.state],
        "readme": anchor(event.state),
    }


def _finite(v: float) -> float | str:
    # JSON has no NaN or inf: strict parsers (and ganforge-report) get them as strings.
    return float(v) if math.isfinite(v) else str(v)


# --- the timeline -------------------------------------------------------------------------------
def timeline_image(
    history: list[tuple[int, dict[str, float]]],
    episodes: list[dict[str, Any]],
    end: int,
    warmup: int = 0,
) -> np.ndarray:
    """Three panels over GAN iterations: D's accuracy and G's diversity; gradient norms; the
    episodes as bars, one row per state (the warm-up, not diagnosed, shaded)."""

    fig = Figure(figsize=(8, 6), dpi=100)
    ax_acc, ax_grad, ax_state = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [2, 2, 1.4]}
    )
    for ax, keys, ylabel in (
        (ax_acc, ("d_acc_real", "d_acc_fake", "diversity"), "accuracy / ratio"),
        (ax_grad, ("g_grad_norm", "d_grad_norm"), "gradient norm"),
    ):
        for key in keys:
            points = [(it, s[key]) for it, s in history if key in s and math.isfinite(s[key])]
            if points:
                it, values = np.array(points, dtype=float).T
                ax.plot(it, values, lw=1.2, label=key)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
    if ax_grad.lines and all(min(line.get_ydata()) > 0 for line in ax_grad.lines):
        ax_grad.set_yscale("log")
    for row, state in enumerate(STATES):
        spans = [
            (e["start"], (e["end"] if e["end"] is not None else end) - e["start"])
            for e in episodes
            if e["state"] == state
        ]
        ax_state.broken_barh(
            [(s, max(w, 1)) for s, w in spans], (row - 0.35, 0.7), color=COLORS[state]
        )
    if warmup > 0:
        ax_state.axvspan(0, min(warmup, end), color="0.92", zorder=0)
    if not episodes:
        ax_state.text(0.5, 0.5, "no state raised", transform=ax_state.transAxes, ha="center",
                      va="center", fontsize=9, color="0.4")  # fmt: skip
    ax_state.set_yticks(range(len(STATES)), STATES, fontsize=7)
    ax_state.set_ylim(-0.6, len(STATES) - 0.4)
    ax_state.set_xlim(0, max(end, 1))
    ax_state.set_xlabel("GAN iteration")
    ax_state.grid(axis="x", alpha=0.3)
    fig.suptitle("training health (bars: diagnosed states; grey: warm-up)", fontsize=9)
    return figure_image(fig)
